"""WaveGAN building blocks that are fast on XLA's CPU backend, and the conditioning layers.

`ConvTranspose1D` and `Conv1D` compute exactly what `flax.linen.ConvTranspose` and a strided `flax.linen.Conv`
compute with 'SAME' padding, from one kernel parameter of the same shape and name, but only ever run stride-1
convolutions: XLA's CPU backend runs the stock lhs-dilated (transposed) and strided convolutions, above all their
backward passes, one to two orders of magnitude below its matmul rate (docs/results.md, Performance). Both wrap cleanly in
`flax.linen.SpectralNorm`, which sees the stock-shaped kernel.

Each layer with parameters takes flax's `dtype` (the computation's: None promotes the inputs and the parameters, as
flax's own layers do) and `param_dtype` (the parameters', float32 by default), so that the models can run their
convolutions in bfloat16 while keeping float32 parameters (config.train.dtype).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes
from flax.typing import Dtype
from jax import lax

_DIMENSIONS = ('NWC', 'WIO', 'NWC')


def _with_bias(layer: nn.Module, y: jax.Array) -> jax.Array:
  """y [..., features] plus the layer's 'bias' parameter, added in y's dtype."""
  bias = layer.param('bias', layer.bias_init, (layer.features,), layer.param_dtype)
  return y + bias.astype(y.dtype)


def _transpose_same_padding(kernel_size: int, stride: int) -> int:
  """Left padding of the dilated input in `lax.conv_transpose(..., 'SAME')` (jax's own rule)."""
  if stride > kernel_size - 1:
    return kernel_size - 1
  return -(-(kernel_size + stride - 2) // 2)


class ConvTranspose1D(nn.Module):
  """Polyphase (sub-pixel) form of `nn.ConvTranspose(features, (kernel_size,), strides=(stride,), padding='SAME')`.

  Output phase p (samples p, p + stride, ...) is a stride-1 convolution of the input with every stride-th tap of
  the kernel, so one stride-1 convolution with `stride * features` output channels followed by interleaving the
  phases gives the whole output (for stride 4 and 25 taps: a 7-tap convolution). The kernel parameter has the
  stock shape [kernel_size, in_features, features] and is rearranged on the fly, so the gradients of the stock
  layer and of this one are equal too.

  Attributes:
    features: output channels.
    kernel_size: taps of the transposed convolution.
    stride: upsampling factor.
    use_bias: whether to add a bias.
    kernel_init: initializer of the stock-shaped kernel (flax's default for ConvTranspose).
    bias_init: initializer of the bias.
    dtype: the computation's dtype (None: that of the input and the parameters, promoted).
    param_dtype: the parameters' dtype.
  """
  features: int
  kernel_size: int = 25
  stride: int = 4
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, L, C_in] -> [B, L * stride, features]."""
    k, s = self.kernel_size, self.stride
    kernel = self.param('kernel', self.kernel_init, (k, x.shape[-1], self.features), self.param_dtype)
    # With the dilated input's left padding `pad`, output sample s*q + p is sum_t kernel[s*t + pad - p] x[q + t]
    # over the t that index inside the kernel: t in [first_tap, last_tap].
    pad = _transpose_same_padding(k, s)
    first_tap = -(pad // s)
    last_tap = (k - 1 - pad + s - 1) // s
    taps = last_tap - first_tap + 1
    # Zero-pad the kernel so that, reshaped to [taps, s], entry (t - first_tap, s - 1 - p) is kernel[s*t + pad - p].
    left = -(s * first_tap + pad - s + 1)
    phases = jnp.pad(kernel, ((left, s * taps - k - left), (0, 0), (0, 0)))
    phases = jnp.flip(phases.reshape(taps, s, x.shape[-1], self.features), axis=1)
    phases = phases.transpose(0, 2, 1, 3).reshape(taps, x.shape[-1], s * self.features)
    x, phases = dtypes.promote_dtype(x, phases, dtype=self.dtype)
    y = lax.conv_general_dilated(x, phases, (1,), [(-first_tap, last_tap)], dimension_numbers=_DIMENSIONS)
    y = y.reshape(x.shape[0], x.shape[1] * s, self.features)
    return _with_bias(self, y) if self.use_bias else y


class Conv1D(nn.Module):
  """Space-to-depth form of `nn.Conv(features, (kernel_size,), strides=(stride,), padding='SAME')`.

  Folding the input [B, L, C] into [B, L / stride, stride * C] turns the strided convolution into a stride-1
  convolution with ceil(kernel_size / stride) taps (7 for 25 taps, stride 4) whose kernel is the stock kernel,
  zero-padded and reshaped on the fly. The kernel parameter has the stock shape [kernel_size, in_features,
  features]. The input length must be divisible by the stride.

  Attributes:
    features: output channels.
    kernel_size: taps of the strided convolution.
    stride: downsampling factor.
    use_bias: whether to add a bias.
    kernel_init: initializer of the stock-shaped kernel (flax's default for Conv).
    bias_init: initializer of the bias.
    dtype: the computation's dtype (None: that of the input and the parameters, promoted).
    param_dtype: the parameters' dtype.
  """
  features: int
  kernel_size: int = 25
  stride: int = 4
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, L, C_in], L divisible by stride -> [B, L / stride, features]."""
    k, s = self.kernel_size, self.stride
    b, length, channels = x.shape
    if length % s:
      raise ValueError(f'Conv1D needs an input length divisible by the stride {s}; got {length}.')
    kernel = self.param('kernel', self.kernel_init, (k, channels, self.features), self.param_dtype)
    # 'SAME' pads `pad_left` zeros before the input; `shift` more zero taps in front of the kernel make that
    # a whole number of folded frames.
    pad_left = max(k - s, 0) // 2
    shift = -pad_left % s
    taps = -(-(k + shift) // s)
    folded_kernel = jnp.pad(kernel, ((shift, s * taps - k - shift), (0, 0), (0, 0)))
    folded_kernel = folded_kernel.reshape(taps, s * channels, self.features)
    frames_left = (pad_left + shift) // s
    x, folded_kernel = dtypes.promote_dtype(x, folded_kernel, dtype=self.dtype)
    y = lax.conv_general_dilated(x.reshape(b, length // s, s * channels), folded_kernel, (1,),
                                 [(frames_left, taps - 1 - frames_left)], dimension_numbers=_DIMENSIONS)
    return _with_bias(self, y) if self.use_bias else y


class SameConv1D(nn.Module):
  """`nn.Conv(features, (kernel_size,), padding='SAME')` (stride 1), fast also when the kernel outgrows the input.

  XLA's CPU backend runs a convolution whose kernel is longer than its input (e.g. 9 taps over 8 frames) some
  fifty times slower than one over a slightly longer input, and folds any explicit zero padding back into the
  convolution. In that case the convolution is computed as a matrix product of the stacked shifted inputs
  (im2col) instead, which is exact. Parameters ('kernel' [kernel_size, in, features], 'bias') are nn.Conv's.

  Attributes:
    features: output channels.
    kernel_size: taps.
    kernel_init: initializer of the kernel (flax's default for Conv).
    bias_init: initializer of the bias.
    dtype: the computation's dtype (None: that of the input and the parameters, promoted).
    param_dtype: the parameters' dtype.
  """
  features: int
  kernel_size: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, L, C_in] -> [B, L, features]."""
    k, length = self.kernel_size, x.shape[1]
    kernel = self.param('kernel', self.kernel_init, (k, x.shape[-1], self.features), self.param_dtype)
    x, kernel = dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    left = (k - 1) // 2
    if k <= length:
      y = lax.conv_general_dilated(x, kernel, (1,), [(left, k - 1 - left)], dimension_numbers=_DIMENSIONS)
    else:
      padded = jnp.pad(x, ((0, 0), (left, k - 1 - left), (0, 0)))
      columns = jnp.concatenate([padded[:, t:t + length] for t in range(k)], axis=-1)  # [B, L, k * C_in]
      y = columns @ kernel.reshape(-1, self.features)
    return _with_bias(self, y)


class ConditionalBatchNorm(nn.Module):
  """Batch norm without its own affine map, followed by a per-class scale and shift (de Vries et al., 2017).

  Running statistics live in the 'batch_stats' collection. Under `jax.jit` with the batch sharded over a mesh,
  the batch mean and variance are computed over the global (logical) batch: XLA inserts the cross-device
  reductions, so no `axis_name` is needed (that is only for `shard_map`/`pmap`). With a bfloat16 `dtype`, flax's
  batch norm still computes the statistics (and keeps the running ones) in float32 and normalises in float32;
  only its output and the per-class affine map are bfloat16.

  Attributes:
    num_classes: number of conditioning classes.
    momentum: decay of the running statistics.
    epsilon: added to the variance.
    dtype: the computation's dtype (None: that of the input and the parameters, promoted).
    param_dtype: the parameters' dtype.
  """
  num_classes: int
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, use_running_average: bool) -> jax.Array:
    """x: [B, ..., C]; labels: [B] int32 in [0, num_classes) -> [B, ..., C]."""
    features = x.shape[-1]
    types = {'dtype': self.dtype, 'param_dtype': self.param_dtype}
    x = nn.BatchNorm(use_running_average=use_running_average, momentum=self.momentum, epsilon=self.epsilon,
                     use_bias=False, use_scale=False, name='norm', **types)(x)
    gamma = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones, name='gamma', **types)(labels)
    beta = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros, name='beta', **types)(labels)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (features,)
    return x * gamma.reshape(shape) + beta.reshape(shape)


class PhaseShuffle(nn.Module):
  """WaveGAN's phase shuffle: shift each example in time by a random integer in [-radius, radius].

  The gap is filled by reflection, as in WaveGAN. Unlike WaveGAN (one shift per batch), every example draws its
  own shift. Randomness comes from the 'phase_shuffle' rng stream; outside training the layer is the identity.

  Attributes:
    radius: largest shift in samples.
  """
  radius: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, L, C] -> [B, L, C]."""
    if not train or self.radius == 0:
      return x
    r, length = self.radius, x.shape[1]
    shifts = jax.random.randint(self.make_rng('phase_shuffle'), (x.shape[0], 1, 1), -r, r + 1)
    padded = jnp.pad(x, ((0, 0), (r, r), (0, 0)), mode='reflect')
    # A select among the 2r+1 shifted views: unlike a per-example gather, its backward pass is elementwise.
    y = padded[:, 2 * r:2 * r + length]
    for shift in range(-r + 1, r + 1):
      y = jnp.where(shifts == shift, padded[:, r - shift:r - shift + length], y)
    return y
