"""Differentiable harmonic-plus-noise synthesis in JAX (DDSP, Engel et al., 2020).

A note is a sum of harmonics of an exactly known fundamental plus filtered noise, both shaped over time by
control signals at a frame rate (one frame every `hop` samples) and by a smooth attack-decay envelope:

  harmonic(n) = sum_k A_k(n) sin(2 pi (k phase(n) + phi_k)),  phase(n) = sum_{m < n} f0(m) / sample_rate  (cycles),
  noise       = overlap-add of frames of a fixed white noise, each filtered by that frame's magnitude response.

with phi_k partial k's start phase (0 unless a network sets it). The harmonic amplitudes are interpolated linearly
between frames; partials at or above Nyquist get no amplitude, so nothing aliases. Everything is pure, batched,
jittable and differentiable in the controls.

As in DDSP, a network predicts raw, unbounded outputs and this module owns everything after them: `controls(raw)`
turns them into the synthesiser's controls (every nonlinearity and scaling: amplitudes, the harmonic distribution
with its fundamental floor, the noise bands, the envelope's time constants), and `synthesize(controls, ...)` makes
the note. models/generator.py's HarmonicGenerator only predicts the raw outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np

# The white noise the noise synthesiser filters: fixed, so that a translation is a deterministic function of the
# face and the pitch (the same face always sounds the same).
NOISE_SEED = 0


def midi_to_hz(midi: jax.Array | np.ndarray | float) -> jax.Array | np.ndarray | float:
  """Equal temperament, A4 = MIDI 69 = 440 Hz; for jax arrays, numpy arrays (float64 stays float64) and numbers.

  The one definition of the project's tuning: the synthesiser's f0, the listening measures' expected pitches and
  the synthetic notes of tests and benchmarks all use it.
  """
  return 440.0 * 2.0**((midi - 69.0) / 12.0)


def sin_cycles(cycles: jax.Array) -> jax.Array:
  """sin(2 pi cycles), as a range-reduced odd polynomial: within 5e-7 of jnp.sin, ~3.5x faster on the CPU.

  XLA's CPU backend computes jnp.sin through a general range reduction that it does not vectorise well (when the
  oscillator bank took a sine per sample and partial, 16 x 8192 x 64 values, jnp.sin took 46 ms of a 160 ms
  train step; the bank now needs about 8 times fewer: harmonic_synth). Phases in cycles
  reduce exactly: r = cycles - round(cycles) in [-1/2, 1/2], folded to [-1/4, 1/4] by sin(pi - t) = sin(t), then
  the Taylor polynomial of degree 11 of sin on [-pi/2, pi/2] (truncation error below 6e-8). Its derivative is
  computed by autodiff through the same operations.
  """
  r = cycles - jnp.round(cycles)
  r = jnp.where(r > 0.25, 0.5 - r, jnp.where(r < -0.25, -0.5 - r, r))
  t = (2.0 * np.pi) * r
  t2 = t * t
  return t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (1.0 / 362880.0 + t2 *
                                                                                       (-1.0 / 39916800.0))))))


def exp_sigmoid(x: jax.Array, max_value: float = 2.0, exponent: float = 10.0, threshold: float = 1e-7) -> jax.Array:
  """DDSP's positive, bounded amplitude nonlinearity: max_value * sigmoid(x)**ln(exponent) + threshold."""
  return max_value * jax.nn.sigmoid(x)**np.log(exponent) + threshold


def attack_decay_envelope(attack_s: jax.Array, decay_s: jax.Array, sustain: jax.Array, length: int,
                          sample_rate: int) -> jax.Array:
  """A smooth note envelope: (1 - exp(-t / attack)) (sustain + (1 - sustain) exp(-t / decay)).

  Args:
    attack_s: [B, 1] attack time constants (s).
    decay_s: [B, 1] decay time constants (s).
    sustain: [B, 1] levels the decay tends to, in [0, 1].
    length: samples.
    sample_rate: Hz.

  Returns:
    [B, length] float32 in [0, 1].
  """
  t = jnp.arange(length, dtype=jnp.float32)[None, :] / sample_rate
  return (1.0 - jnp.exp(-t / attack_s)) * (sustain + (1.0 - sustain) * jnp.exp(-t / decay_s))


# `normalize_rms` divides by sqrt(RMS^2 + RMS_FLOOR^2): a silent note stays silent (no division by 0), and a note
# far quieter than the floor is raised by at most target / RMS_FLOOR (700x at 0.07) rather than to the target.
RMS_FLOOR = 1e-4


def normalize_rms(audio: jax.Array, target: float) -> jax.Array:
  """Each note [..., L] scaled to the RMS `target` (0 = unchanged); a silent note stays silent (RMS_FLOOR).

  Applied to the generated notes and to the real notes they are judged against (data/note_batches.py computes the
  same in TensorFlow), so that notes differ in timbre and shape, not in level: how loud a recording was played is
  not a property of the instrument, and a listener comparing two faces compares them at one loudness.
  """
  if not target:
    return audio
  rms = jnp.sqrt(jnp.mean(jnp.square(audio), axis=-1, keepdims=True) + RMS_FLOOR**2)
  return audio * (target / rms)


def release_window(length: int, sample_rate: int, release_s: float) -> np.ndarray:
  """A note's release: 1, then a squared half-Hann fade to 0 over the last `release_s` seconds.

  Applied to the generated notes and to the real notes they are judged against (both are cut from longer notes),
  so that every note ends in silence instead of a click and neither can be told from the other by its end. A
  squared fade rather than a plain one: 10 ms before the end of a 50 ms release the gain is 0.009 (-41 dB), where
  a plain half-Hann would still be at -20 dB.

  Args:
    length: samples.
    sample_rate: Hz.
    release_s: duration of the fade (s); 0 = no fade (all ones).

  Returns:
    [length] float32 gains in [0, 1].
  """
  window = np.ones(length, np.float32)
  fade = min(int(round(release_s * sample_rate)), length)
  if fade > 0:
    remaining = (np.arange(fade, 0, -1) - 1) / fade  # 1 - 1/fade ... 0: the last sample is silent.
    window[length - fade:] = (0.5 - 0.5 * np.cos(np.pi * remaining))**2
  return window


def with_fundamental(distribution: jax.Array, floor: float | jax.Array) -> jax.Array:
  """A harmonic distribution whose fundamental carries at least `floor` of the amplitude.

  Real instruments at high pitches have a strong fundamental; a learned distribution that puts little on it
  (measured on real photos: 4-12% of the harmonic energy at MIDI 72) makes the pitch ambiguous by an octave. The
  learned weights, normalised to sum to 1, share (1 - floor) of the amplitude; the fundamental gets `floor` more.

  Args:
    distribution: [..., K] non-negative weights of the K harmonics.
    floor: in [0, 1): a number (0 returns the weights unchanged) or an array that broadcasts against
      distribution[..., :1], e.g. [B, 1, 1] for one floor per note of [B, F, K].

  Returns:
    [..., K] non-negative weights summing to 1 (where floor > 0).
  """
  if isinstance(floor, (int, float, np.floating)) and floor <= 0:
    return distribution
  normalised = distribution / jnp.maximum(jnp.sum(distribution, axis=-1, keepdims=True), 1e-7)
  return (1.0 - floor) * normalised + floor * jax.nn.one_hot(0, distribution.shape[-1], dtype=distribution.dtype)


def fundamental_floor(midi: jax.Array, floor: float, floor_high: float = 0.0,
                      pitches: tuple[int, int] = (60, 72)) -> float | jax.Array:
  """The fundamental's floor (`with_fundamental`) of notes at `midi` [B]: `floor` at every pitch if `floor_high` is 0,
  else `floor` up to MIDI pitches[0], rising linearly to `floor_high` at pitches[1] and kept there ([B])."""
  if not floor_high:
    return floor
  low, high = pitches
  rise = jnp.clip((jnp.asarray(midi, jnp.float32) - low) / (high - low), 0.0, 1.0)
  return floor + (floor_high - floor) * rise


def envelope_at_harmonics(bands: jax.Array, f0_hz: jax.Array, num_harmonics: int, low_hz: float,
                          high_hz: float) -> jax.Array:
  """A spectral envelope read at each harmonic's frequency: [B, F, M] values, [B] f0 -> [B, F, K].

  The M values lie at log-spaced frequencies from `low_hz` to `high_hz` (M >= 2); harmonic k (k = 1..K) takes the
  envelope linearly interpolated in log frequency at k f0, the end values beyond the ends. A timbre so described is
  a function of frequency (a resonance stays where it is as the pitch moves), not of harmonic index.
  """
  num_bands = bands.shape[-1]
  if num_bands < 2:
    raise ValueError(f'envelope_at_harmonics needs at least 2 bands; got {num_bands}.')
  k = jnp.arange(1, num_harmonics + 1, dtype=jnp.float32)
  position = (jnp.log(f0_hz[:, None] * k) - np.log(low_hz)) / (np.log(high_hz) - np.log(low_hz)) * (num_bands - 1)
  position = jnp.clip(position, 0.0, num_bands - 1.0)  # [B, K]
  # Hat functions: each harmonic's weights on its two neighbouring bands, summing to 1.
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(position[..., None] - jnp.arange(num_bands, dtype=jnp.float32)))
  return jnp.einsum('bfm,bkm->bfk', bands, weights)


def harmonic_synth(f0_hz: jax.Array, amplitudes: jax.Array, distribution: jax.Array, length: int, sample_rate: int,
                   phases: jax.Array | None = None, max_hz: float = 0.0) -> jax.Array:
  """A bank of harmonic oscillators k f0, k = 1..K, with amplitudes interpolated linearly between frames.

  Control frame f sits at sample f hop (hop = length / F); the amplitudes ramp linearly from frame f to frame
  f + 1 over the hop samples between them (the last frame holds): harmonic k's amplitude at sample j of frame f is
  p[f, k] + (j / hop) s[f, k], with p the frame's amplitude and s the step to the next frame's.

  With f0 constant over a note, harmonic k's phase at sample f hop + j is the sum of a phase per frame,
  k f0 f hop / sample_rate, and one per sample of the frame, k f0 j / sample_rate (in cycles). So, with
  E[j, k] = exp(2 pi i k f0 j / sample_rate) one table of hop x K oscillators shared by all frames and
  W[f, k] = exp(2 pi i (k f0 f hop / sample_rate + phi_k)), with phi_k the partial's start phase (`phases`),

    audio[f hop + j] = Im(sum_k (p[f, k] + (j / hop) s[f, k]) W[f, k] E[j, k]),

  one matrix product per note ([2F, 2K] x [2K, hop]: real and imaginary parts, amplitudes and slopes) instead of a
  sine per sample and harmonic: 2 K (hop + F) sines per note instead of K F hop, about F / 2 times fewer (at the
  small model's size the forward pass 5-15x and forward + backward about 7x faster: docs/experiments.md). Up to
  16384 samples the phases are exact in float32 to about 1e-5 cycles (below) and the notes within 1e-4 of their
  peak of a float64 sum of sines (tests/audio/test_synthesis.py); beyond, the error grows with the length squared
  (about 1e-3 of the peak at 65536 samples, where one float32 phase product would be 7e-3 off).

  Args:
    f0_hz: [B] fundamental of each note, constant over the note (Hz).
    amplitudes: [B, F] overall amplitude per control frame (>= 0).
    distribution: [B, F, K] non-negative weights of the K harmonics per frame; partials at or above Nyquist (or
      `max_hz`) are set to zero here and the rest renormalised to sum to 1.
    length: output samples, divisible by F, at most 65536.
    sample_rate: Hz.
    phases: [B, K] each partial's phase at the note's first sample, in cycles (any real number); None = 0 for
      every partial (all partials start rising together: sin(2 pi k phase(n))).
    max_hz: partials at or above this frequency are silent too (0 = only those at or above Nyquist).

  Returns:
    [B, length] float32 waveforms.
  """
  length, sample_rate = int(length), int(sample_rate)
  f0_hz = jnp.asarray(f0_hz, jnp.float32)
  batch, frames, num_harmonics = distribution.shape
  if length % frames:
    raise ValueError(f'harmonic_synth needs length ({length}) divisible by the number of frames ({frames}).')
  if length > 2**16:
    raise ValueError(f'harmonic_synth makes notes of at most {2**16} samples; got length {length}.')
  if phases is not None and phases.shape != (batch, num_harmonics):
    raise ValueError(f'harmonic_synth needs start phases of shape [B, K] = {(batch, num_harmonics)}; got '
                     f'{phases.shape}.')
  hop = length // frames
  k = jnp.arange(1, num_harmonics + 1, dtype=jnp.float32)
  top = sample_rate / 2 if not max_hz else min(float(max_hz), sample_rate / 2)
  audible = (k[None, :] * f0_hz[:, None] < top).astype(distribution.dtype)  # [B, K]
  distribution = distribution * audible[:, None, :]
  distribution = distribution / jnp.maximum(jnp.sum(distribution, axis=-1, keepdims=True), 1e-7)
  partials = amplitudes[..., None] * distribution  # [B, F, K]
  slope = jnp.concatenate([partials[:, 1:] - partials[:, :-1], jnp.zeros_like(partials[:, :1])], axis=1)

  # Phases in cycles, exact in float32 to about 1e-5 cycles for every partial up to 16384 samples (one float32
  # product k f0 n / sample_rate is off by up to 4e-3 cycles at k = 64, n = 8192): f0 / sample_rate = coarse +
  # fine, with coarse a multiple of 2^-q, q = min(11, 25 - log2(length)), so that coarse n and k times its
  # fraction are exact in float32 (for f0 below Nyquist and K < 8192) and fine n (a few cycles at 8192 samples)
  # is rounded relative to its small size.
  scale = 2.0**min(11, 25 - max(1, (length - 1).bit_length()))
  coarse = jnp.round(f0_hz / sample_rate * scale) / scale
  fine = (f0_hz - coarse * sample_rate) / sample_rate

  def phase_at(samples: np.ndarray) -> jax.Array:
    """Harmonic k's phase at each of `samples` (< length), in cycles modulo 1: [B, len(samples), K]."""
    n = samples.astype(np.float32)
    whole = jnp.mod(coarse[:, None] * n, 1.0)[..., None] * k
    return jnp.mod(whole + (fine[:, None] * n)[..., None] * k, 1.0)

  in_frame = phase_at(np.arange(hop))  # [B, hop, K]
  table = jnp.concatenate([sin_cycles(in_frame), sin_cycles(in_frame + 0.25)], axis=-1)  # [B, hop, 2K]: Im, Re
  at_frame = phase_at(hop * np.arange(frames))  # [B, F, K]
  if phases is not None:  # A partial's start phase adds to its phase at every frame (and so at every sample).
    at_frame = at_frame + jnp.mod(phases, 1.0)[:, None, :]
  cos_w, sin_w = sin_cycles(at_frame + 0.25), sin_cycles(at_frame)
  # Im((x W) E) = Re(x W) Im(E) + Im(x W) Re(E) for real x: rows [x Re(W), x Im(W)] against columns [Im(E), Re(E)].
  weights = jnp.concatenate([jnp.concatenate([x * cos_w, x * sin_w], axis=-1) for x in (partials, slope)], axis=1)
  blocks = jnp.einsum('bfk,bjk->bfj', weights, table, precision=jax.lax.Precision.HIGHEST)  # [B, 2F, hop]
  ramp = jnp.arange(hop, dtype=jnp.float32) / hop
  return (blocks[:, :frames] + ramp * blocks[:, frames:]).reshape(batch, length)


def white_spectrum(frames: int, hop: int) -> jax.Array:
  """The fixed random-phase white spectrum filtered_noise shapes: complex [frames, hop + 1], unit-variance noise
  frames of 2 hop samples after irfft (seeded by NOISE_SEED)."""
  phase = jax.random.uniform(jax.random.key(NOISE_SEED), (frames, hop + 1), maxval=2.0 * np.pi)
  return jnp.exp(1j * phase) * np.sqrt(2.0 * hop)


def filtered_noise(magnitudes: jax.Array, length: int, hop: int) -> jax.Array:
  """Time-varying filtered noise by overlap-add of Hann-windowed frames (50% overlap).

  Frame f spans samples [(f - 1) hop, (f + 1) hop) of the output; its spectrum is a fixed random-phase white
  spectrum times the frame's magnitude response, linearly interpolated from `magnitudes`' bands to the frame's
  hop + 1 frequency bins (0 to Nyquist). The white frames have unit variance and periodic Hann windows at 50%
  overlap sum to 1, so a constant response m gives noise of standard deviation about 0.87 m.

  Args:
    magnitudes: [B, F, bands] non-negative magnitude responses, F = length / hop + 1 frames.
    length: output samples, divisible by hop.
    hop: samples between frames.

  Returns:
    [B, length] float32.
  """
  batch, frames, bands = magnitudes.shape
  if length % hop or frames != length // hop + 1:
    raise ValueError(f'filtered_noise needs length divisible by hop and length / hop + 1 = {length // hop + 1} '
                     f'frames; got length {length}, hop {hop}, {frames} frames.')
  bins = hop + 1
  response = jax.image.resize(magnitudes, (batch, frames, bins), 'linear') if bands != bins else magnitudes
  frame_audio = jnp.fft.irfft(response * white_spectrum(frames, hop), n=2 * hop, axis=-1)  # [B, F, 2 hop]
  window = np.hanning(2 * hop + 1)[:-1].astype(np.float32)  # Periodic Hann: sums to 1 at 50% overlap.
  frame_audio = frame_audio * window
  first, second = frame_audio[:, :, :hop], frame_audio[:, :, hop:]
  # Output block b (samples [b hop, (b + 1) hop)) = second half of frame b + first half of frame b + 1.
  return (second[:, :-1] + first[:, 1:]).reshape(batch, length)


# Ranges of the envelope's controls: attack 1-100 ms, decay time constant 20 ms - 5 s (a sigmoid in [0, 1] is the
# exponent of the range's ratio).
ATTACK_S = (0.001, 100.0)
DECAY_S = (0.02, 250.0)


def controls(raw: dict[str, jax.Array], *, length: int, sample_rate: int, noise_max: float = 2.0,
             relative_noise: bool = False, fundamental_floor: float | jax.Array = 0.0) -> dict[str, jax.Array]:
  """A network's raw outputs -> the synthesiser's controls: every nonlinearity and scaling, nothing learned.

  Args:
    raw: unbounded network outputs, float32:
      'amplitude' [B, F, 1]: the overall amplitude per control frame (exp_sigmoid: 0-2);
      'harmonics' [B, F, K]: the harmonic distribution (exp_sigmoid, then at least `fundamental_floor` on the
        fundamental: with_fundamental);
      'noise' [B, F, bands]: the noise filter's magnitudes (exp_sigmoid up to `noise_max`), interpolated to the F + 1
        frames filtered_noise overlaps;
      'envelope' [B, 3]: attack, decay and sustain (sigmoid; attack 1-100 ms and decay 20 ms - 5 s on exponential
        scales, sustain 0-1);
      'phases' [B, K], optional: each partial's start phase in cycles (as is: a phase needs no bound).
    length: samples of the note.
    sample_rate: Hz.
    noise_max: the upper bound of each noise band's magnitude (DDSP's 2).
    relative_noise: scale the noise by the frame's harmonic amplitude, so that `noise_max` bounds it relative to
      the harmonics.
    fundamental_floor: the fraction of the harmonic amplitude the fundamental always carries: a number (0 = none)
      or [B], one per note.

  Returns:
    {'amplitude' [B, F], 'distribution' [B, F, K], 'noise' [B, F + 1, bands], 'envelope' [B, length]}, and
    'phases' [B, K] where raw has them.
  """
  amplitude = exp_sigmoid(raw['amplitude'])
  floor = fundamental_floor if np.ndim(fundamental_floor) == 0 else fundamental_floor[:, None, None]
  distribution = with_fundamental(exp_sigmoid(raw['harmonics']), floor)
  noise = exp_sigmoid(raw['noise'], max_value=noise_max)
  if relative_noise:
    noise = noise * amplitude
  batch, frames, bands = noise.shape
  noise = jax.image.resize(noise, (batch, frames + 1, bands), 'linear')
  attack, decay, sustain = jnp.split(jax.nn.sigmoid(raw['envelope']), 3, axis=-1)
  envelope = attack_decay_envelope(ATTACK_S[0] * ATTACK_S[1]**attack, DECAY_S[0] * DECAY_S[1]**decay, sustain, length,
                                   sample_rate)
  out = {'amplitude': amplitude[..., 0], 'distribution': distribution, 'noise': noise, 'envelope': envelope}
  if 'phases' in raw:
    out['phases'] = raw['phases']
  return out


def synthesize(controls_: dict[str, jax.Array], f0_hz: jax.Array, length: int, sample_rate: int, release_s: float = 0.0,
               max_partial_hz: float = 0.0) -> jax.Array:
  """A note from its controls (`controls`): envelope x release x (harmonics + filtered noise).

  Args:
    controls_: the controls of B notes.
    f0_hz: [B] fundamentals (Hz).
    length: samples; divisible by the number of control frames.
    sample_rate: Hz.
    release_s: a fade over the note's last seconds (release_window); 0 = none.
    max_partial_hz: partials at or above this frequency are silent (harmonic_synth's max_hz; 0 = up to Nyquist).

  Returns:
    [B, length] float32 waveforms.
  """
  frames = controls_['amplitude'].shape[1]
  harmonic = harmonic_synth(f0_hz, controls_['amplitude'], controls_['distribution'], length, sample_rate,
                            controls_.get('phases'), max_partial_hz)
  noise = filtered_noise(controls_['noise'], length, length // frames)
  return controls_['envelope'] * release_window(length, sample_rate, release_s) * (harmonic + noise)
