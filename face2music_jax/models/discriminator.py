"""The discriminators: WaveGAN's D(y, pitch) with a projection head, and the auxiliary A(phi(y))."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.typing import Dtype

from face2music_jax import config_lib
from face2music_jax.audio import harmonic_bands as bands_lib
from face2music_jax.audio import synthesis
from face2music_jax.models.layers import Conv1D
from face2music_jax.models.layers import PhaseShuffle


class Discriminator(nn.Module):
  """WaveGAN's discriminator with spectral normalisation and a projection head on the pitch.

  `num_layers` strided convolutions (widths d, 2d, 4d, ...; stride `stride`, `kernel_size` taps) with LeakyReLU
  0.2, phase shuffle after every one but the last (training only), then the flattened features h [B, F] give
  logit = linear(h) + <embed(pitch), h> (Miyato & Koyama, 2018). Every layer, the linear output and the pitch
  embedding included, is spectrally normalised (`nn.SpectralNorm`, one power iteration per call). The strided
  convolutions are the space-to-depth form of `nn.Conv` (layers.py).

  With `classify_pitch`, a spectrally normalised linear head also classifies the pitch from h (an auxiliary
  classifier, as GANSynth's discriminator has), and the call returns (logits, pitch logits).

  With `harmonic_bands` K > 0 a second branch sees the note's energy around each of its first K harmonics, frame by
  frame (audio/harmonic_bands.py: bands [k - 0.5, k + 0.5) x f0 of the requested pitch, 2048-point frames every 512
  samples), in log10 units: two spectrally normalised convolutions over the frames (3 taps; widths 4d and 8d, the
  second with stride 2) with LeakyReLU 0.2, flattened and appended to h before the heads. The waveform branch has
  to find a note's partials in its samples; this one has them on an axis where a partial sits in the same place at
  every pitch, so that a timbre no real note of that pitch has (a near-sine at MIDI 36, one partial pattern for many
  faces) is plain to see (docs/experiments.md, twenty-first round, measures what it did).

  With a bfloat16 `dtype` the convolutions and their activations run in bfloat16 (mixed precision). The spectral
  norms' power iteration runs on the float32 parameters and keeps float32 statistics; the normalised kernels are
  cast for the convolutions. The heads run in float32 on h: each logit sums over all F features, and they are what
  the losses see.

  Variables: 'params' and 'batch_stats' (the spectral norms' power-iteration vectors u and estimates sigma;
  mutable when `train`). `apply` needs the 'phase_shuffle' rng when `train` and phase_shuffle > 0.

  Attributes:
    dim: WaveGAN's model dimensionality d (64 in the paper).
    num_pitches: number of pitch classes.
    kernel_size: taps of each strided convolution.
    stride: downsampling factor of each strided convolution.
    num_layers: number of strided convolutions.
    phase_shuffle: phase shuffle radius in samples (0 disables it).
    classify_pitch: add the auxiliary pitch classification head.
    harmonic_bands: harmonic bands K of the harmonic branch (0: no such branch, WaveGAN's D).
    pitch_min: the MIDI pitch of pitch class 0 (the harmonic branch's fundamentals; needed with harmonic_bands).
    sample_rate: the notes' sampling rate in Hz (the harmonic branch's band edges).
    dtype: the computation's dtype of the convolutions (float32 or bfloat16).
  """
  dim: int
  num_pitches: int
  kernel_size: int = 25
  stride: int = 4
  num_layers: int = 5
  phase_shuffle: int = 2
  classify_pitch: bool = False
  harmonic_bands: int = 0
  pitch_min: int | None = None
  sample_rate: int = 16000
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array, pitch: jax.Array, train: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Scores notes given their pitch.

    Args:
      audio: [B, L] float32 waveforms in [-1, 1], L divisible by stride**num_layers.
      pitch: [B] int32 pitch class indices in [0, num_pitches).
      train: update the spectral norms' statistics and apply phase shuffle.

    Returns:
      [B] float32 logits (higher = more real); with `classify_pitch`, also [B, num_pitches] pitch logits.
    """
    downsampling = self.stride**self.num_layers
    if audio.shape[1] % downsampling:
      raise ValueError(f'Discriminator input length {audio.shape[1]} must be divisible by {downsampling}.')
    x = audio[..., None]
    for i in range(self.num_layers):
      conv = Conv1D(self.dim * 2**i, self.kernel_size, self.stride, dtype=self.dtype, name=f'conv{i}')
      x = nn.leaky_relu(nn.SpectralNorm(conv, name=f'conv{i}_sn')(x, update_stats=train), 0.2)
      if i < self.num_layers - 1:
        x = PhaseShuffle(self.phase_shuffle, name=f'phase_shuffle{i}')(x, train)
    h = x.reshape(x.shape[0], -1).astype(jnp.float32)
    if self.harmonic_bands:
      h = jnp.concatenate([h, self._harmonic_branch(audio, pitch, train)], axis=-1)
    logit = nn.SpectralNorm(nn.Dense(1, name='linear'), name='linear_sn')(h, update_stats=train)[:, 0]
    embedding = nn.Embed(self.num_pitches, h.shape[-1], name='pitch_embedding')
    projection = nn.SpectralNorm(embedding, name='pitch_embedding_sn')(pitch, update_stats=train)
    logit = logit + jnp.sum(projection * h, axis=-1)
    if not self.classify_pitch:
      return logit
    head = nn.Dense(self.num_pitches, name='pitch_classifier')
    return logit, nn.SpectralNorm(head, name='pitch_classifier_sn')(h, update_stats=train)

  def _harmonic_branch(self, audio: jax.Array, pitch: jax.Array, train: bool) -> jax.Array:
    """[B, L] notes, [B] pitch classes -> [B, F'] float32 features of their harmonic bands."""
    if self.pitch_min is None:
      raise ValueError('The harmonic branch needs pitch_min, the MIDI pitch of pitch class 0, to place the bands.')
    f0_hz = synthesis.midi_to_hz((pitch + self.pitch_min).astype(jnp.float32))
    energies = bands_lib.harmonic_band_energies(audio.astype(jnp.float32), f0_hz, num_harmonics=self.harmonic_bands,
                                                sample_rate=self.sample_rate)
    # log10 of the band power, -7 for an empty band and -0.43 for a full-scale sine's, mapped to [-1, 1.19].
    x = (jnp.log10(energies + 1e-7) + 4.0) / 3.0
    for i, (width, stride) in enumerate(((4 * self.dim, 1), (8 * self.dim, 2))):
      conv = nn.Conv(width, (3,), strides=(stride,), padding='SAME', dtype=self.dtype, name=f'bands_conv{i}')
      x = nn.leaky_relu(nn.SpectralNorm(conv, name=f'bands_conv{i}_sn')(x, update_stats=train), 0.2)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


class AuxDiscriminator(nn.Module):
  """The auxiliary discriminator A(phi(y)): an MLP on the audio metric embedding.

  With `pack` > 1 it judges `pack` notes at once (PacGAN, Lin et al. 2018): consecutive rows of the batch are
  concatenated, so A sees whether notes of different faces differ as much as real notes do, which a critic of one
  note at a time cannot see; a generator that gives most faces one timbre is then told apart.

  With `num_pitches` > 0 it is conditioned on the notes' pitch by projection (Miyato and Koyama 2018, as the main
  discriminator is, here without spectral normalisation): the logit gains <embed(pitch), h> with h its last hidden
  layer, so A compares phi(y) with the real notes of the same pitch, not with real notes of any pitch: a generator
  whose high notes all sound like one family is told apart even where that family is common among the low notes.

  With `input_scale` phi(y) is first multiplied, dimension by dimension, by the variable `input_scale/weight`
  (ones when initialised; `fit_aux_input_scale` sets it before training from the real notes, and it is kept with
  A's variables): A then sees each of phi's MFCC coefficients rescaled to one common spread over the real notes,
  whatever scale Eq. 1 uses for them.

  Attributes:
    features: widths of the dense layers, the last one 1 (the paper: 128, 64, 32, 16, 1).
    pack: notes judged together (1: the paper's A, one note at a time).
    num_pitches: pitch classes of the projection; 0 = unconditional (the paper's A).
    input_scale: multiply phi(y) by the fitted per-dimension weights first (config train.aux_mfcc_scale).
  """
  features: Sequence[int] = (128, 64, 32, 16, 1)
  pack: int = 1
  num_pitches: int = 0
  input_scale: bool = False

  @nn.compact
  def __call__(self, phi: jax.Array, pitch: jax.Array | None = None) -> jax.Array:
    """phi: [B, F] float32 audio embeddings phi(y), B a multiple of `pack`; pitch: [B] int32 pitch classes, needed
    when conditional -> [B / pack] float32 logits."""
    b, f = phi.shape
    if b % self.pack:
      raise ValueError(f'The auxiliary discriminator packs {self.pack} notes: a batch of {b} does not divide.')
    if self.input_scale:
      phi = phi * self.variable('input_scale', 'weight', jnp.ones, (f,), jnp.float32).value
    x = phi.reshape(b // self.pack, self.pack * f)
    for i, width in enumerate(self.features):
      if i:
        x = nn.leaky_relu(x, 0.2)
      h = x
      x = nn.Dense(width, name=f'dense{i}')(x)
    logit = x[:, 0]
    if not self.num_pitches:
      return logit
    if pitch is None or pitch.shape != (b,):
      raise ValueError(f'The pitch-conditional auxiliary discriminator needs one pitch per note ([{b}]), got '
                       f'{None if pitch is None else pitch.shape}.')
    # A pack's notes add their pitches' embeddings: the projection of the pack's pitches.
    embedding = nn.Embed(self.num_pitches, h.shape[-1], name='pitch_projection')(pitch)
    embedding = embedding.reshape(b // self.pack, self.pack, -1).sum(axis=1)
    return logit + jnp.sum(embedding * h, axis=-1)


def make_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
  """The main discriminator of `config.model`, computing its convolutions in `config.train.dtype`."""
  m = config.model
  return Discriminator(dim=m.discriminator_dim, num_pitches=config_lib.num_pitches(config), kernel_size=m.kernel_size,
                       stride=m.stride, num_layers=m.num_layers, phase_shuffle=m.phase_shuffle,
                       classify_pitch=config.train.pitch_classification_weight > 0,
                       harmonic_bands=m.discriminator_harmonics, pitch_min=config.audio.pitch_min,
                       sample_rate=config.audio.sample_rate, dtype=jnp.dtype(config.train.dtype))


def make_aux_discriminator(config: ml_collections.ConfigDict) -> AuxDiscriminator:
  """The auxiliary discriminator of `config.model.aux_features`."""
  return AuxDiscriminator(features=tuple(config.model.aux_features), pack=config.model.aux_pack,
                          num_pitches=config_lib.num_pitches(config) if config.model.aux_pitch_conditional else 0,
                          input_scale=config.train.aux_mfcc_scale == 'coefficient')


def fit_aux_input_scale(real_phi: np.ndarray, n_mfcc: int) -> dict[str, np.ndarray]:
  """A's `input_scale` variables for train.aux_mfcc_scale = 'coefficient', from phi(y) of real notes [N, F] whose
  last `n_mfcc` dimensions are the MFCC half: each of those is divided by its own standard deviation over the notes
  and multiplied by their root mean variance (the half's RMS spread is kept, its coefficients spread alike); the
  other dimensions are left as they are (weight 1).

  Raises:
    ValueError: fewer than 2 notes, not [N, F] with F >= n_mfcc, non-finite values, or a coefficient that does not
      vary over the notes.
  """
  real_phi = np.asarray(real_phi, np.float64)
  if real_phi.ndim != 2 or len(real_phi) < 2 or not 0 < n_mfcc <= real_phi.shape[1]:
    raise ValueError(f'Expected phi(y) of at least 2 real notes, [N, F] with F >= n_mfcc = {n_mfcc}; got '
                     f'{real_phi.shape}.')
  if not np.all(np.isfinite(real_phi)):
    raise ValueError('phi(y) of the real notes holds NaN or infinite values.')
  std = real_phi[:, -n_mfcc:].std(axis=0)
  if np.min(std) <= 0:
    raise ValueError(f'MFCC coefficient {int(np.argmin(std))} does not vary over the {len(real_phi)} real notes: '
                     'no scale can be fitted.')
  weight = np.ones(real_phi.shape[1])
  weight[-n_mfcc:] = np.sqrt(np.mean(np.square(std))) / std
  return {'weight': weight.astype(np.float32)}
