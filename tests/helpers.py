"""Synthetic inputs for fast tests of the models and the train step (no dataset needed)."""

import ml_collections

from face2music_jax.configs import aux
from face2music_jax import synthetic


def tiny_config(name: str = 'aux') -> ml_collections.ConfigDict:
  config = aux.get_config('tiny')
  config.name = name
  config.train.use_metric_loss = name in ('metric', 'aux')
  config.train.use_aux_discriminator = name == 'aux'
  return config


synthetic_batch = synthetic.batch
random_metric = synthetic.audio_metric
