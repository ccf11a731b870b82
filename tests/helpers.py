"""Synthetic inputs for fast tests of the models and the train step (no dataset needed)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import aux
from face2music_jax import config_lib
from face2music_jax.audio import embedding as embedding_lib


def tiny_config(name: str = 'aux') -> ml_collections.ConfigDict:
  config = aux.get_config('tiny')
  config.name = name
  config.train.use_metric_loss = name in ('metric', 'aux')
  config.train.use_aux_discriminator = name == 'aux'
  return config


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """Face-like unit-scale embeddings and harmonic notes at the batch's pitches."""
  rng = np.random.default_rng(seed)
  pitch = rng.integers(0, config_lib.num_pitches(config), batch_size).astype(np.int32)
  freq = 440.0 * 2 ** ((pitch + config.audio.pitch_min - 69) / 12)
  t = np.arange(config.audio.length) / config.audio.sample_rate
  audio = 0.5 * np.sin(2 * np.pi * freq[:, None] * t) * np.exp(-3 * t)
  audio = (audio + 0.01 * rng.normal(size=audio.shape)).astype(np.float32)
  embedding = rng.normal(size=(batch_size, config.data.embedding_dim)).astype(np.float32)
  embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
  return {'embedding': embedding, 'audio': audio, 'pitch': pitch}


def random_metric(config: ml_collections.ConfigDict, seed: int = 0) -> embedding_lib.AudioMetric:
  """An untrained audio metric phi (random embedding weights, unit MFCC standardisation)."""
  model = embedding_lib.make_audio_embedding(config)
  params = model.init(jax.random.key(seed), jnp.zeros((1, config.audio.length)))['params']
  n = config.mfcc.n_mfcc
  return {'params': params, 'mfcc_mean': np.zeros(n, np.float32), 'mfcc_std': np.full(n, 100.0, np.float32)}
