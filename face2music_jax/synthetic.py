"""Synthetic inputs of the right shapes for the train step and phi: for tests and benchmarks (no dataset needed)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from face2music_jax import config_lib
from face2music_jax import losses
from face2music_jax.audio import synthesis
from face2music_jax.models import audio_embedding as embedding_lib


def batch(config: ml_collections.ConfigDict, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """A train-step batch of config.train.d_steps sub-batches [D, batch_size, ...]: unit-norm face-like embeddings
  and decaying harmonic notes at the batch's pitches."""
  rng = np.random.default_rng(seed)
  shape = (config.train.d_steps, batch_size)
  pitch = rng.integers(0, config_lib.num_pitches(config), shape).astype(np.int32)
  freq = synthesis.midi_to_hz(config_lib.midi_pitch(config, pitch))
  t = np.arange(config.audio.length) / config.audio.sample_rate
  audio = 0.5 * np.sin(2 * np.pi * freq[..., None] * t) * np.exp(-3 * t)
  audio = (audio + 0.01 * rng.normal(size=audio.shape)).astype(np.float32)
  embedding = rng.normal(size=shape + (config.data.embedding_dim,)).astype(np.float32)
  embedding /= np.linalg.norm(embedding, axis=-1, keepdims=True)
  return {'embedding': embedding, 'audio': audio, 'pitch': pitch}


def audio_metric(config: ml_collections.ConfigDict, seed: int = 0) -> embedding_lib.AudioMetric:
  """An untrained audio metric phi (random embedding weights, unit MFCC standardisation)."""
  model = embedding_lib.make_audio_embedding(config)
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, config.audio.length)))['params']
  n = config.mfcc.n_mfcc
  return {'params': params, 'mfcc_mean': np.zeros(n, np.float32), 'mfcc_std': np.full(n, 100.0, np.float32)}


def statistics(config: ml_collections.ConfigDict | None = None) -> dict[str, np.ndarray]:
  """Standardisation constants of the metric loss (mu = 1, sigma = 1), in phi and in its MFCC half (for any
  train.metric_features); with a config, also the statistics its train step takes besides (the family-marginal
  loss's family centroids in phi, random, every family present, scale 1; the family faces' centre at 0)."""
  out = {k: np.float32(1.0) for k in losses.statistics_keys('both')}
  if config is None:
    return out
  if config.train.family_marginal_weight > 0:
    k = len(config_lib.NSYNTH_FAMILIES)
    centroids = np.random.default_rng(0).normal(size=(k, embedding_lib.phi_dim(config)))
    out.update(family_centroids=centroids.astype(np.float32), family_present=np.ones(k, np.float32),
               family_scale=np.float32(1.0))
  if config.train.family_faces_center:
    out['family_faces_center'] = np.zeros(config.data.embedding_dim, np.float32)
  return out
