"""The paper's `aux` model: adversarial + metric preservation loss + auxiliary discriminator."""

import ml_collections

from face2music_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg, name='aux')
  config.train.use_metric_loss = True
  config.train.use_aux_discriminator = True
  return config
