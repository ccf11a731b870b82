"""The paper's `baseline` model: adversarial loss only."""

import ml_collections

from face2music_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg, name='baseline')
  config.train.use_metric_loss = False
  config.train.use_aux_discriminator = False
  return config
