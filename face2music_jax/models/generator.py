"""The conditional WaveGAN generator G(f(x), pitch): a face embedding and a pitch class -> a note's waveform."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from face2music_jax import config_lib
from face2music_jax.models.layers import ConditionalBatchNorm
from face2music_jax.models.layers import ConvTranspose1D


class Generator(nn.Module):
  """WaveGAN's generator (Donahue et al., 2019) with conditional batch norm on the pitch.

  A dense layer maps the face embedding to `length / stride**num_layers` frames of `dim * 2**(num_layers - 1)`
  channels; `num_layers` transposed convolutions (stride `stride`, `kernel_size` taps) each multiply the length
  by `stride` and halve the channels, the last one producing a single channel. With the defaults and dim = d the
  stack reaches 8192 samples (0.512 s at 16 kHz) as 8 x 4^5: [8, 16d] -> [32, 8d] -> [128, 4d] -> [512, 2d] ->
  [2048, d] -> [8192, 1]. Every block but the output one ends in conditional batch norm on the pitch and ReLU;
  the output block ends in tanh. The transposed convolutions are the polyphase form of `nn.ConvTranspose` (layers.py).

  Variables: 'params' and 'batch_stats' (running statistics of the batch norms; mutable when `train`).

  Attributes:
    dim: WaveGAN's model dimensionality d (64 in the paper).
    num_pitches: number of pitch classes.
    length: output samples; divisible by stride**num_layers.
    kernel_size: taps of each transposed convolution.
    stride: upsampling factor of each transposed convolution.
    num_layers: number of transposed convolutions.
  """
  dim: int
  num_pitches: int
  length: int
  kernel_size: int = 25
  stride: int = 4
  num_layers: int = 5

  @nn.compact
  def __call__(self, z: jax.Array, pitch: jax.Array, train: bool) -> jax.Array:
    """Generates one note per face.

    Args:
      z: [B, E] float32 face embeddings.
      pitch: [B] int32 pitch class indices in [0, num_pitches).
      train: use batch statistics (and update the running ones) rather than the running statistics.

    Returns:
      [B, length] float32 waveforms in [-1, 1].
    """
    upsampling = self.stride ** self.num_layers
    if self.length % upsampling:
      raise ValueError(f'Generator length {self.length} must be divisible by stride**num_layers = {upsampling}.')
    channels = self.dim * 2 ** (self.num_layers - 1)
    # No biases before batch norm: its mean subtraction would cancel them.
    x = nn.Dense(self.length // upsampling * channels, use_bias=False, name='project')(z)
    x = x.reshape(z.shape[0], self.length // upsampling, channels)
    x = nn.relu(ConditionalBatchNorm(self.num_pitches, name='project_norm')(x, pitch, not train))
    for i in range(self.num_layers - 1):
      channels //= 2
      x = ConvTranspose1D(channels, self.kernel_size, self.stride, use_bias=False, name=f'upconv{i}')(x)
      x = nn.relu(ConditionalBatchNorm(self.num_pitches, name=f'upconv{i}_norm')(x, pitch, not train))
    x = ConvTranspose1D(1, self.kernel_size, self.stride, name=f'upconv{self.num_layers - 1}')(x)
    return jnp.tanh(x[..., 0])


def make_generator(config: ml_collections.ConfigDict) -> Generator:
  """The generator of `config.model`, producing `config.audio.length` samples."""
  m = config.model
  return Generator(dim=m.generator_dim, num_pitches=config_lib.num_pitches(config), length=config.audio.length,
                   kernel_size=m.kernel_size, stride=m.stride, num_layers=m.num_layers)
