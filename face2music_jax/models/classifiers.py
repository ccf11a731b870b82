"""1-D convolutional networks on raw audio: the shared backbone, the pitch and family classifiers.

The classifiers are trained on real notes and then frozen: evaluation computes FID from their penultimate
features and the Inception Score from their softmax.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from face2music_jax import config_lib
from face2music_jax.models.layers import SameConv1D


class AudioConvNet(nn.Module):
  """Raw audio -> a feature vector.

  The audio is first folded into 1 ms frames (space-to-depth: [B, T] -> [B, T/16, 16]), so that every
  convolution is stride 1: XLA's CPU backend runs those near its matmul ceiling, unlike strided convs
  (docs/results.md, Performance); the last block's 9 taps over 8 frames take the im2col path of SameConv1D. Each block:
  9-tap conv, layer norm, LeakyReLU 0.2, average pool by 4.

  Attributes:
    channels: width of the first block; block k has channels * 2**k.
    num_blocks: number of conv blocks.
    frame: samples per frame of the space-to-depth fold.
  """
  channels: int
  num_blocks: int = 4
  frame: int = 16

  @nn.compact
  def __call__(self, audio: jax.Array) -> jax.Array:
    """audio: [B, T] float32 in [-1, 1], T divisible by frame * 4**num_blocks -> features [B, channels * 2**(n-1)]."""
    b, t = audio.shape
    if t % (self.frame * 4**self.num_blocks):
      raise ValueError(f'Audio length {t} must be divisible by {self.frame * 4 ** self.num_blocks}.')
    x = audio.reshape(b, t // self.frame, self.frame)
    for k in range(self.num_blocks):
      x = SameConv1D(self.channels * 2**k, 9, name=f'conv{k}')(x)
      x = nn.LayerNorm(name=f'norm{k}')(x)
      x = nn.leaky_relu(x, 0.2)
      x = nn.avg_pool(x, (4,), strides=(4,))
    return jnp.mean(x, axis=1)


class AudioClassifier(nn.Module):
  """Pitch or instrument-family classifier on raw audio.

  Attributes:
    num_classes: number of output classes.
    channels: backbone width.
    feature_dim: width of the penultimate layer (the FID features).
  """
  num_classes: int
  channels: int
  feature_dim: int = 128

  @nn.compact
  def __call__(self, audio: jax.Array) -> tuple[jax.Array, jax.Array]:
    """audio: [B, T] -> (logits [B, num_classes], penultimate features [B, feature_dim])."""
    h = AudioConvNet(self.channels, name='backbone')(audio)
    features = nn.relu(nn.Dense(self.feature_dim, name='penultimate')(h))
    return nn.Dense(self.num_classes, name='logits')(features), features


def make_classifier(config: ml_collections.ConfigDict, kind: str) -> AudioClassifier:
  """The config's pitch classifier (kind 'pitch') or instrument-family classifier (kind 'family')."""
  num_classes = {'pitch': config_lib.num_pitches(config), 'family': config_lib.num_families(config)}[kind]
  return AudioClassifier(num_classes, config.model.classifier_channels)
