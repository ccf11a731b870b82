"""The generators G(f(x), pitch): a face embedding and a pitch class -> a note's waveform.

Two are selectable with `config.model.generator`: the paper's conditional WaveGAN ('wavegan'), and a
harmonic-plus-noise synthesiser driven by a small network ('harmonic', DDSP-style), which is in tune by
construction. Both take the same inputs, write the same [B, length] audio and train with the same step.

Both take a computation `dtype` (config.train.dtype): with bfloat16, the network's matmuls, convolutions and
activations run in bfloat16 while the parameters stay float32 (mixed precision); what they write, the waveform,
is computed and returned in float32 (see each generator for where the switch happens).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.typing import Dtype

from face2music_jax import config_lib
from face2music_jax.audio import synthesis
from face2music_jax.models.layers import ConditionalBatchNorm
from face2music_jax.models.layers import ConvTranspose1D


class WaveGANGenerator(nn.Module):
  """WaveGAN's generator (Donahue et al., 2019) with conditional batch norm on the pitch.

  A dense layer maps the face embedding to `length / stride**num_layers` frames of `dim * 2**(num_layers - 1)`
  channels; `num_layers` transposed convolutions (stride `stride`, `kernel_size` taps) each multiply the length
  by `stride` and halve the channels, the last one producing a single channel. With the defaults and dim = d the
  stack reaches 8192 samples (0.512 s at 16 kHz) as 8 x 4^5: [8, 16d] -> [32, 8d] -> [128, 4d] -> [512, 2d] ->
  [2048, d] -> [8192, 1]. Every block but the output one ends in conditional batch norm on the pitch and ReLU;
  the output block ends in tanh. The transposed convolutions are the polyphase form of `nn.ConvTranspose` (layers.py).

  Options against the faults of this generator on our data (docs/experiments.md): `upsample='nearest'` or
  'linear' replaces each transposed convolution by that upsampling and a stride-1 convolution (no checkerboard
  pattern at the layers' frame rates); `pitch_input` feeds a learned pitch embedding to the first layer beside the
  face embedding; `post_filter` > 0 adds WaveGAN's learned post-processing FIR filter of that many taps.

  With a bfloat16 `dtype` every block but the output one runs in bfloat16. The output block (the last
  convolution, tanh and the post filter) runs in float32: bfloat16's 8-bit significand would put a quantisation
  floor about 50 dB under each sample into the notes that D and phi hear, and that block is about 1% of G's work
  at the paper size.

  Variables: 'params' and 'batch_stats' (running statistics of the batch norms; mutable when `train`).

  Attributes:
    dim: WaveGAN's model dimensionality d (64 in the paper).
    num_pitches: number of pitch classes.
    length: output samples; divisible by stride**num_layers.
    kernel_size: taps of each transposed convolution.
    stride: upsampling factor of each transposed convolution.
    num_layers: number of transposed convolutions.
    upsample: 'transposed', 'nearest' or 'linear'.
    pitch_input: concatenate a learned pitch embedding (dim channels) to the face embedding.
    post_filter: taps of the output FIR filter; 0 = none.
    sample_rate: Hz (for the release's duration).
    release_s: the note's release, a fade over its last seconds (synthesis.release_window); 0 = none.
    note_rms: every note scaled to this RMS (synthesis.normalize_rms, as the real notes); 0 = as generated.
    dtype: the computation's dtype of every block but the output one (float32 or bfloat16).
  """
  dim: int
  num_pitches: int
  length: int
  kernel_size: int = 25
  stride: int = 4
  num_layers: int = 5
  upsample: str = 'transposed'
  pitch_input: bool = False
  post_filter: int = 0
  sample_rate: int = 16000
  release_s: float = 0.0
  note_rms: float = 0.0
  dtype: Dtype = jnp.float32

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
    upsampling = self.stride**self.num_layers
    if self.length % upsampling:
      raise ValueError(f'WaveGANGenerator length {self.length} must be divisible by stride**num_layers = {upsampling}.')
    channels = self.dim * 2**(self.num_layers - 1)
    if self.pitch_input:
      z = jnp.concatenate([z, nn.Embed(self.num_pitches, self.dim, name='pitch_embedding')(pitch)], axis=-1)
    # No biases before batch norm: its mean subtraction would cancel them.
    x = nn.Dense(self.length // upsampling * channels, use_bias=False, dtype=self.dtype, name='project')(z)
    x = x.reshape(z.shape[0], self.length // upsampling, channels)
    x = nn.relu(ConditionalBatchNorm(self.num_pitches, dtype=self.dtype, name='project_norm')(x, pitch, not train))
    for i in range(self.num_layers - 1):
      channels //= 2
      x = self._upconv(x, channels, False, self.dtype, f'upconv{i}')
      x = nn.relu(ConditionalBatchNorm(self.num_pitches, dtype=self.dtype, name=f'upconv{i}_norm')(x, pitch, not train))
    x = jnp.tanh(self._upconv(x, 1, True, jnp.float32, f'upconv{self.num_layers - 1}'))
    if self.post_filter:
      x = nn.Conv(1, (self.post_filter,), dtype=jnp.float32, name='post_filter')(x)
    return synthesis.normalize_rms(x[..., 0] * synthesis.release_window(self.length, self.sample_rate, self.release_s),
                                   self.note_rms)

  def _upconv(self, x: jax.Array, features: int, use_bias: bool, dtype: Dtype, name: str) -> jax.Array:
    """[B, L, C] -> [B, L * stride, features], computed in `dtype`."""
    if self.upsample == 'transposed':
      return ConvTranspose1D(features, self.kernel_size, self.stride, use_bias=use_bias, dtype=dtype, name=name)(x)
    if self.upsample == 'nearest':
      x = jnp.repeat(x, self.stride, axis=1)
    elif self.upsample == 'linear':
      x = jax.image.resize(x, (x.shape[0], x.shape[1] * self.stride, x.shape[2]), 'linear')
    else:
      raise ValueError(f'Unknown upsampling {self.upsample!r}.')
    return nn.Conv(features, (self.kernel_size,), use_bias=use_bias, dtype=dtype, name=name)(x)


class HarmonicGenerator(nn.Module):
  """A harmonic-plus-noise synthesiser whose controls a network predicts from the face and the pitch.

  The fundamental is set exactly from the requested pitch (synthesis.midi_to_hz). From the face embedding and the
  pitch, the network predicts raw, unbounded outputs, which `synthesis.controls` turns into the note's shape in
  time and its timbre and `synthesis.synthesize` into audio (DDSP's split of network and synthesiser):

  - an attack-decay-sustain envelope (attack 1-100 ms, decay time constant 20 ms - 5 s, sustain level 0-1),
    smooth by construction, which carries the note's fast changes (its attack);
  - per control frame (`frames` of them over the note, linearly interpolated between), an amplitude, the
    distribution of `num_harmonics` harmonics and the magnitude response of filtered noise in `noise_bands` bands.

  The frames are few (16 over 8192 samples: 32 ms apart) on purpose: controls that change every few milliseconds
  modulate the partials into sidebands, and at low pitches (MIDI 36: f0 65 Hz) such a note loses its periodicity
  and sounds like noise (docs/experiments.md). The network: an MLP maps [f(x); pitch embedding;
  (midi - 60) / 24] to a conditioning vector c; a dense layer turns c into the frames, `num_blocks` blocks (3-tap
  convolution over frames, layer norm, FiLM by c, LeakyReLU) refine them, and dense heads give the controls; the
  envelope comes from c. The pitch enters every block and sets f0, so the output cannot ignore it; the face sets
  the timbre and the envelope.

  Initially the notes are quiet (amplitude ~0.1) with noise ~90 dB below the harmonics; the GAN raises it when
  real notes call for it, up to `noise_max` (the config's default bounds it relative to the harmonics). Variables:
  'params', with `normalize_face` 'batch_stats' (the running mean and variance of the training faces), and with
  `face_components` 'face_space' (the training faces' mean and principal directions, `fit_face_space`).

  With `face_components` = K > 0, f(x) is first projected onto the affine span of the training faces' first K
  principal components: mean + (f(x) - mean) V V^T. The network then never sees the directions in which the
  training faces hardly vary, and in which faces from real photos vary most (docs/experiments.md). The basis is
  fitted once on the training faces (`fit_face_space`), set before training and saved with G's variables; fresh
  variables (a model never trained, as in tests and benchmarks) keep the first K coordinates of f(x) instead.

  With `normalize_face` each dimension of f(x) is standardised (batch norm without scale and bias: in training by
  the batch, then by the running statistics of the training faces). A face embedding's dimensions vary by ~0.06
  between people (dlib: ~0.7 apart over 128 dimensions) and share a common offset, while the pitch embedding
  beside it is of order 1; unstandardised, the pitch drowned the face (docs/experiments.md).

  With a bfloat16 `dtype` only the control network's trunk (the conditioning MLP and the frame blocks) runs in
  bfloat16. Its heads and the synthesiser (envelope, oscillator bank, phases, filtered noise) run in float32:
  the phases must be exact to 1e-5 cycles for the upper partials to stay in tune, which bfloat16 (2-3 significant
  digits) is far from, and the heads, exponentiated into amplitudes, cost next to nothing.

  Attributes:
    num_pitches: number of pitch classes.
    pitch_min: MIDI pitch of class 0 (config.audio.pitch_min; the model adds it as `config_lib.midi_pitch` does).
    length: output samples; divisible by `frames`.
    sample_rate: Hz.
    hidden: width of the conditioning MLP.
    channels: width of the frame blocks.
    num_harmonics: partials k f0, k = 1..num_harmonics (those at or above Nyquist are silent).
    max_partial_hz: partials at or above this frequency are silent too (0 = up to Nyquist): the real notes of the
      data hold at most 1.1% of a note's energy above 6 kHz, and one strong partial above about 5 kHz makes pYIN
      misread a note's pitch (docs/experiments.md, real photos, twenty-fifth round).
    noise_bands: bands of the noise filter, from 0 to Nyquist.
    frames: control frames over the note.
    num_blocks: convolution blocks over the frames.
    noise_max: upper bound of each noise band's magnitude (DDSP's 2).
    relative_noise: scale the noise bands by the frame's harmonic amplitude, so that `noise_max` bounds the
      noise relative to the harmonics (a note can never be more noise than tone) rather than absolutely.
    normalize_face: standardise each dimension of the face embedding (see above).
    face_norm: with `normalize_face`, what standardises the faces in training: 'batch' (each batch by its own
      statistics, updating the running ones) or 'fixed' (the running statistics, which `face_norm_statistics` sets
      from all the training faces before the first step and training never changes), so that G trains on a face
      where it will translate it and meets batches whose faces lie off the training faces' mean, as a photo
      domain's do.
    face_components: project the face embedding onto this many principal components of the training faces (see
      above); 0 = none.
    fundamental_floor: the fraction of the harmonic amplitude the fundamental always carries
      (synthesis.with_fundamental), so that high notes are not heard an octave low; 0 = none.
    fundamental_floor_high: the floor at high pitches (0 = `fundamental_floor` at every pitch): from MIDI
      fundamental_floor_pitches[0] the floor rises linearly from `fundamental_floor` to this, reached at
      fundamental_floor_pitches[1] and kept above it. Real notes at high pitches roll off steeply (harmonics 5-8 of
      MIDI 70-74 lie 13-44 dB under the fundamental); notes whose partials do not are heard an octave low by pYIN.
    fundamental_floor_pitches: (from, to) MIDI pitches of that rise.
    learned_phases: each partial's start phase predicted per note from the conditioning vector (initially a
      random phase per partial, which the face and pitch move by a fraction of a cycle), instead of 0 for every
      partial. With all partials starting at phase 0, a harmonic-rich note has one waveform shape, which D tells from
      real notes' shapes (a sine has no such tell): docs/experiments.md, eighth round.
    envelope_bands: the harmonic distribution read off a spectral envelope of this many log-spaced bands from the
      lowest note's fundamental to Nyquist (synthesis.envelope_at_harmonics), one envelope per control frame (or per
      note with `steady_harmonics`), instead of a weight per harmonic index; 0 = a weight per harmonic index. A weight
      per index lets a note hold a few isolated upper partials far above a near-silent middle (measured: harmonics
      57-62 of MIDI 36, 9-10 of MIDI 72), which pYIN misreads; an envelope over frequency is the source-filter view
      of timbre (32 bands: fewer families, more near-sines; docs/experiments.md, twenty-seventh round).
    steady_harmonics: one harmonic distribution per note, from the conditioning vector (as the envelope), instead of
      one per control frame: the partials keep their relative levels over the note, as a real instrument's do
      (the overall amplitude still follows the frames and the envelope).
    release_s: the note's release, a fade over its last seconds (synthesis.release_window); 0 = none.
    note_rms: every note scaled to this RMS (synthesis.normalize_rms, as the real notes); 0 = as generated.
    dtype: the computation's dtype of the control network's trunk (float32 or bfloat16).
  """
  num_pitches: int
  pitch_min: int
  length: int
  sample_rate: int
  hidden: int = 128
  channels: int = 64
  num_harmonics: int = 64
  envelope_bands: int = 0
  max_partial_hz: float = 0.0
  noise_bands: int = 32
  frames: int = 16
  num_blocks: int = 2
  noise_max: float = 2.0
  relative_noise: bool = False
  normalize_face: bool = False
  face_norm: str = 'batch'
  face_components: int = 0
  fundamental_floor: float = 0.0
  fundamental_floor_high: float = 0.0
  fundamental_floor_pitches: tuple[int, int] = (60, 72)
  steady_harmonics: bool = False
  learned_phases: bool = False
  release_s: float = 0.0
  note_rms: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, pitch: jax.Array, train: bool) -> jax.Array:
    """Generates one note per face.

    Args:
      z: [B, E] float32 face embeddings.
      pitch: [B] int32 pitch class indices in [0, num_pitches).
      train: standardise the faces by the batch's statistics (and update the running ones) rather than by the
        running statistics (with `normalize_face`).

    Returns:
      [B, length] float32 waveforms.
    """
    if self.length % self.frames:
      raise ValueError(f'HarmonicGenerator length {self.length} must be divisible by frames = {self.frames}.')
    if self.face_components:
      mean = self.variable('face_space', 'mean', jnp.zeros, (z.shape[-1],), jnp.float32).value
      basis = self.variable('face_space', 'basis',
                            lambda: jnp.eye(z.shape[-1], self.face_components, dtype=jnp.float32)).value
      z = mean + ((z - mean) @ basis) @ basis.T
    if self.normalize_face:
      z = nn.BatchNorm(use_running_average=not train or self.face_norm == 'fixed', momentum=0.99, use_scale=False,
                       use_bias=False, name='face_norm')(z)
    midi = (pitch + self.pitch_min).astype(jnp.float32)
    c = jnp.concatenate(
        [z, nn.Embed(self.num_pitches, self.hidden, name='pitch_embedding')(pitch),
         ((midi - 60.0) / 24.0)[:, None]], axis=-1)
    dtype = self.dtype
    for i in range(2):
      c = nn.leaky_relu(nn.Dense(self.hidden, dtype=dtype, name=f'condition{i}')(c), 0.2)
    x = nn.Dense(self.frames * self.channels, dtype=dtype, name='project')(c)
    x = x.reshape(z.shape[0], self.frames, self.channels)
    for i in range(self.num_blocks):
      x = nn.Conv(self.channels, (3,), dtype=dtype, name=f'conv{i}')(x)
      x = nn.LayerNorm(use_scale=False, use_bias=False, dtype=dtype, name=f'norm{i}')(x)
      scale, shift = jnp.split(nn.Dense(2 * self.channels, dtype=dtype, name=f'film{i}')(c)[:, None], 2, axis=-1)
      x = nn.leaky_relu(x * (1.0 + scale) + shift, 0.2)
    # The heads and the synthesis in float32 (class docstring).
    x, c = x.astype(jnp.float32), c.astype(jnp.float32)
    width = self.envelope_bands or self.num_harmonics
    if self.steady_harmonics:  # One distribution per note (class docstring).
      harmonics = nn.Dense(width, name='harmonics')(c)[:, None]
      harmonics = jnp.broadcast_to(harmonics, (z.shape[0], self.frames, width))
    else:
      harmonics = nn.Dense(width, name='harmonics')(x)
    if self.envelope_bands:  # A spectral envelope, read at each harmonic's frequency (class docstring).
      harmonics = synthesis.envelope_at_harmonics(harmonics, synthesis.midi_to_hz(midi), self.num_harmonics,
                                                  float(synthesis.midi_to_hz(float(self.pitch_min))),
                                                  self.sample_rate / 2)
    raw = {
        'amplitude': nn.Dense(1, bias_init=nn.initializers.constant(-1.0), name='amplitude')(x),
        'harmonics': harmonics,
        'noise': nn.Dense(self.noise_bands, bias_init=nn.initializers.constant(-5.0), name='noise')(x),
        'envelope': nn.Dense(3, name='envelope')(c),
    }
    if self.learned_phases:  # Start phases in cycles: a random one per partial, which the face and pitch move.
      raw['phases'] = nn.Dense(self.num_harmonics,
                               kernel_init=nn.initializers.variance_scaling(0.01, 'fan_in', 'normal'),
                               bias_init=nn.initializers.uniform(1.0), name='phases')(c)
    # A floor per note, rising with its pitch where fundamental_floor_high is set (class docstring).
    floor = synthesis.fundamental_floor(midi, self.fundamental_floor, self.fundamental_floor_high,
                                        self.fundamental_floor_pitches)
    controls = synthesis.controls(raw, length=self.length, sample_rate=self.sample_rate, noise_max=self.noise_max,
                                  relative_noise=self.relative_noise, fundamental_floor=floor)
    audio = synthesis.synthesize(controls, synthesis.midi_to_hz(midi), self.length, self.sample_rate, self.release_s,
                                 self.max_partial_hz)
    return synthesis.normalize_rms(audio, self.note_rms)


def make_generator(config: ml_collections.ConfigDict) -> WaveGANGenerator | HarmonicGenerator:
  """The generator `config.model.generator` of `config.model`, producing `config.audio.length` samples, computing
  in `config.train.dtype`."""
  m = config.model
  if m.generator == 'harmonic':
    h = m.harmonic
    floor_pitches = tuple(int(p) for p in h.fundamental_floor_pitches)
    return HarmonicGenerator(num_pitches=config_lib.num_pitches(config), pitch_min=config.audio.pitch_min,
                             length=config.audio.length, sample_rate=config.audio.sample_rate, hidden=h.hidden,
                             channels=h.channels, num_harmonics=h.num_harmonics, envelope_bands=h.envelope_bands,
                             max_partial_hz=h.max_partial_hz, noise_bands=h.noise_bands, frames=h.frames,
                             num_blocks=h.num_blocks, noise_max=h.noise_max, relative_noise=h.relative_noise,
                             fundamental_floor=h.fundamental_floor, fundamental_floor_high=h.fundamental_floor_high,
                             fundamental_floor_pitches=floor_pitches, steady_harmonics=h.steady_harmonics,
                             learned_phases=h.learned_phases, normalize_face=h.normalize_face, face_norm=h.face_norm,
                             face_components=h.face_components, release_s=config.audio.release_s,
                             note_rms=config.audio.note_rms, dtype=jnp.dtype(config.train.dtype))
  w = m.wavegan
  return WaveGANGenerator(dim=w.dim, num_pitches=config_lib.num_pitches(config), length=config.audio.length,
                          kernel_size=m.kernel_size, stride=m.stride, num_layers=m.num_layers, upsample=w.upsample,
                          pitch_input=w.pitch_input, post_filter=w.post_filter, sample_rate=config.audio.sample_rate,
                          release_s=config.audio.release_s, note_rms=config.audio.note_rms,
                          dtype=jnp.dtype(config.train.dtype))


def init_variables(generator: nn.Module, embedding_dim: int, rng: jax.Array) -> dict[str, Any]:
  """Fresh generator variables {'params', ...} for faces of `embedding_dim`: rng is a key for the initialisation."""
  z = jnp.zeros((2, embedding_dim), jnp.float32)
  pitch = jnp.zeros((2,), jnp.int32)
  return dict(generator.init(rng, z, pitch, train=False))


def face_statistics(faces: np.ndarray) -> dict[str, np.ndarray]:
  """What `face_space` needs of some faces [N, E]: their 'count', 'mean' [E] and 'scatter' [E, E] (the sum of the
  outer products of the centred faces), float64, summed over chunks of faces (memory E x E for any number of faces,
  as VGGFace2's millions). Hosts that each hold a share of the faces combine theirs (`combine_face_statistics`).

  Raises:
    ValueError: no faces, faces not [N, E], or faces holding NaN or infinite values.
  """
  faces = np.asarray(faces)
  if faces.ndim != 2 or not len(faces):
    raise ValueError(f'Expected faces of shape [N >= 1, E]; got {faces.shape}.')
  if not np.all(np.isfinite(faces)):
    raise ValueError('The faces hold NaN or infinite values.')
  chunk = 65536
  mean = sum(faces[i:i + chunk].astype(np.float64).sum(axis=0) for i in range(0, len(faces), chunk)) / len(faces)
  scatter = np.zeros((faces.shape[1], faces.shape[1]))
  for i in range(0, len(faces), chunk):
    centred = faces[i:i + chunk].astype(np.float64) - mean
    scatter += centred.T @ centred
  return {'count': np.float64(len(faces)), 'mean': mean, 'scatter': scatter}


def combine_face_statistics(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The `face_statistics` of the union of disjoint sets of faces, from theirs (Chan et al.'s pairwise update)."""
  count = sum(np.float64(p['count']) for p in parts)
  mean = sum(np.float64(p['count']) * np.asarray(p['mean'], np.float64) for p in parts) / count
  scatter = sum(
      np.asarray(p['scatter'], np.float64) + np.float64(p['count']) * np.outer(p['mean'] - mean, p['mean'] - mean)
      for p in parts)
  return {'count': count, 'mean': mean, 'scatter': scatter}


def face_space(statistics: Mapping[str, np.ndarray], components: int) -> dict[str, np.ndarray]:
  """G's 'face_space' variables for `HarmonicGenerator.face_components` from `face_statistics`: the faces' mean [E]
  and their first `components` principal directions [E, components] (the scatter matrix's eigenvectors, unit
  columns, by decreasing variance), float32.

  Raises:
    ValueError: fewer than two faces, or more components than the faces' dimensions.
  """
  width = len(statistics['mean'])
  if statistics['count'] < 2 or not 0 < components <= width:
    raise ValueError(f'A face space needs at least 2 faces and 0 < components <= {width} (the faces\' width); got '
                     f'{int(statistics["count"])} faces and components = {components}.')
  _, vectors = np.linalg.eigh(np.asarray(statistics['scatter'], np.float64))
  basis = vectors[:, ::-1][:, :components]
  return {'mean': np.asarray(statistics['mean'], np.float32), 'basis': np.ascontiguousarray(basis, np.float32)}


def face_norm_statistics(statistics: Mapping[str, np.ndarray],
                         space: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """The 'batch_stats' of G's face standardisation (`HarmonicGenerator.face_norm` 'fixed') from `face_statistics`: the
  mean and (biased) variance per dimension of the faces as G's projection `space` (`face_space`; None: no projection)
  leaves them, float32."""
  mean = np.asarray(statistics['mean'], np.float64)
  covariance = np.asarray(statistics['scatter'], np.float64) / np.float64(statistics['count'])
  if space is not None:  # The projected faces: mean + (f - mean) V V^T, whose covariance is P C P with P = V V^T.
    basis = np.asarray(space['basis'], np.float64)
    projector = basis @ basis.T
    covariance = projector @ covariance @ projector
    mean = np.asarray(space['mean'], np.float64)
  return {'mean': mean.astype(np.float32), 'var': np.diag(covariance).astype(np.float32)}


def fit_face_space(faces: np.ndarray, components: int) -> dict[str, np.ndarray]:
  """`face_space` of the faces [N, E] (see there)."""
  return face_space(face_statistics(faces), components)
