"""The audio metric phi(y): a triplet-trained 1-D conv embedding of raw audio, concatenated with MFCCs.

phi(y) = [e(y) ; (mean_t MFCC(y) - m) / (s * sqrt(n_mfcc))], where e(y) is L2-normalised (norm 1) and the MFCC
summary is centred with the training notes' mean m and divided by s, then scaled so that its expected squared norm is 1
as well: neither half dominates the distances. s is one scale for every coefficient, the root mean variance
(`audio_embedding.mfcc_scale='pooled'`, the default: the half's distances are the MFCC means' own, in which c0, the
level, spreads most), or each coefficient's std ('coefficient').
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from face2music_jax.audio import mfcc as mfcc_lib
from face2music_jax.models.classifiers import AudioConvNet

AudioMetric = dict[str, Any]  # {'params': embedding params, 'mfcc_mean': [n_mfcc], 'mfcc_std': [n_mfcc]}


class AudioEmbedding(nn.Module):
  """Raw audio [B, T] -> L2-normalised embedding [B, dim], trained with the triplet loss on instrument family."""
  dim: int
  channels: int

  @nn.compact
  def __call__(self, audio: jax.Array) -> jax.Array:
    h = AudioConvNet(self.channels, name='backbone')(audio)
    e = nn.Dense(self.dim, name='projection')(h)
    return e * jax.lax.rsqrt(jnp.sum(jnp.square(e), axis=-1, keepdims=True) + 1e-12)


def make_audio_embedding(config: ml_collections.ConfigDict) -> AudioEmbedding:
  return AudioEmbedding(config.model.audio_embedding_dim, config.model.audio_embedding_channels)


def mfcc_summary(audio: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Mean MFCCs over time: audio [B, T] -> [B, n_mfcc]."""
  return jnp.mean(mfcc_lib.mfcc_from_config(audio, config), axis=-1)


def phi(metric: AudioMetric, audio: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """The audio metric space: audio [B, T] float32 -> phi(y) [B, audio_embedding_dim + n_mfcc]."""
  e = make_audio_embedding(config).apply({'params': metric['params']}, audio)
  m = (mfcc_summary(audio, config) - metric['mfcc_mean']) / metric['mfcc_std']
  return jnp.concatenate([e, m / jnp.sqrt(float(config.mfcc.n_mfcc))], axis=-1)


def phi_dim(config: ml_collections.ConfigDict) -> int:
  return config.model.audio_embedding_dim + config.mfcc.n_mfcc
