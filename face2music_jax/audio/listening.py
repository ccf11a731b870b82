"""Listening measures: is a note in tune, is it a tone or noise, how loud, and do different faces sound different.

These judge audio the way a listener would, with tools the models never train against: librosa's pYIN pitch
tracker (Mauch & Dixon, 2014) for the fundamental, librosa's spectral flatness, RMS, and librosa's MFCCs for
timbre distances. Evaluation, benchmarks and tests call them on translations and on reference audio (real notes,
white noise, harmonic tones), so every number has a scale.

  in tune        |1200 log2(f0 / f_requested)| <= 50 cents (and <= 100 cents, GANSynth's rule), where f0 is the
                 median pYIN estimate over the clip's voiced frames; a clip with no voiced frame is out of tune.
  voiced         the fraction of a clip's frames that pYIN calls voiced.
  flatness       median over frames of the spectral flatness (geometric / arithmetic mean of the power spectrum):
                 about 5e-6 for the rendered notes, 6e-4 for a harmonic tone with noise 40 dB below it, 0.56
                 for white noise (docs/experiments.md, its first section).
  distinctness   mean distance between the time-averaged MFCCs of translations of *different* faces at one pitch,
                 divided by the same mean over real notes of that pitch: 1 = as varied as real instruments, 0 =
                 every face sounds the same.
  fundamental share   the fraction of a note's energy up to its eighth harmonic that lies around its fundamental
                 (the power spectrum summed over [0.5, 1.5) f0 over the same over [0.5, 8.5) f0, below Nyquist; f0
                 the requested pitch): 1 for a sine, 0.65 for a tone of 8 partials with amplitudes 1/k. A *pure
                 tone* has a share above PURE_TONE_SHARE: of the default data's rendered notes, none at MIDI 36 and
                 a quarter of those at MIDI 72 (docs/experiments.md, twentieth round).
"""

from collections.abc import Sequence

import librosa
import numpy as np
from scipy.spatial import distance

from face2music_jax.audio import synthesis

# pYIN's search range: MIDI 24 (C1, 32.7 Hz) to MIDI 96 (C7, 2093 Hz), the SoundFont notes' range, with a margin.
F0_MIN_HZ = 30.0
F0_MAX_HZ = 2200.0
FRAME_LENGTH = 2048  # 128 ms at 16 kHz: two periods of F0_MIN_HZ fit.
HOP_LENGTH = 256
# pYIN's pitch states are 1/4 semitone apart (librosa's default 1/10 makes its Viterbi decoding ~6x slower); the
# f0 of each frame is still refined by parabolic interpolation: on harmonic tones at MIDI 36-72 both settings
# read within 1 cent.
RESOLUTION = 0.25
N_MFCC = 20
# The fundamental's share: the harmonics it is measured against, and the share above which a note is a pure tone.
SHARE_HARMONICS = 8
PURE_TONE_SHARE = 0.9


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
  """synthesis.midi_to_hz in float64 numpy."""
  return synthesis.midi_to_hz(np.asarray(midi, np.float64))


def estimate_pitch(audio: np.ndarray, sample_rate: int, fmin: float = F0_MIN_HZ,
                   fmax: float = F0_MAX_HZ) -> tuple[np.ndarray, np.ndarray]:
  """pYIN fundamental of each clip.

  Args:
    audio: [N, T] float waveforms.
    sample_rate: Hz.
    fmin, fmax: pYIN's search range (Hz); the default is wide (MIDI 24-96 with a margin).

  Returns:
    (f0 [N] Hz: median over the clip's voiced frames, NaN when none is voiced; voiced [N]: fraction of voiced
    frames).
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2:
    raise ValueError(f'Expected audio of shape [N, T], got {audio.shape}.')
  f0, voiced_flag, _ = librosa.pyin(audio, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=FRAME_LENGTH,
                                    hop_length=HOP_LENGTH, resolution=RESOLUTION)
  voiced = voiced_flag.mean(axis=-1)
  with np.errstate(all='ignore'):
    median = np.array([np.median(f[v]) if v.any() else np.nan for f, v in zip(f0, voiced_flag)])
  return median, voiced


def in_tune_near(audio: np.ndarray, midi_pitch: np.ndarray, sample_rate: int, semitones: float = 13.0,
                 cents: float = 50.0) -> np.ndarray:
  """Whether each clip is in tune when pYIN searches only near the requested pitch (+-`semitones`): [N] bool.

  The strict reading a listener's ear makes when it expects a pitch: an octave error within the range (a weak
  fundamental heard an octave low) is out of tune, as is a clip with no voiced frame. Clips are grouped by pitch,
  one pYIN call per requested pitch.
  """
  midi_pitch = np.asarray(midi_pitch)
  ok = np.zeros(len(midi_pitch), bool)
  for p in np.unique(midi_pitch):
    sel = midi_pitch == p
    f0, _ = estimate_pitch(
        np.asarray(audio)[sel], sample_rate, float(midi_to_hz(p - semitones)), float(midi_to_hz(p + semitones)))
    ok[sel] = np.nan_to_num(np.abs(cents_off(f0, np.full(len(f0), p))), nan=np.inf) <= cents
  return ok


def end_level_db(audio: np.ndarray, sample_rate: int, tail_s: float = 0.01) -> np.ndarray:
  """How far below its peak each clip ends: 20 log10(peak of the last `tail_s` / peak of the clip), [N] dB.

  A note cut while loud (0 to -10 dB) ends with a click; -30 dB or lower is a release.
  """
  audio = np.abs(np.asarray(audio, np.float64))
  tail = max(1, int(round(tail_s * sample_rate)))
  with np.errstate(divide='ignore'):
    return 20.0 * np.log10(np.max(audio[:, -tail:], axis=-1) / np.maximum(np.max(audio, axis=-1), 1e-12) + 1e-12)


def cents_off(f0_hz: np.ndarray, midi_pitch: np.ndarray) -> np.ndarray:
  """Signed distance in cents from the requested MIDI pitch; NaN where f0 is NaN (unvoiced)."""
  with np.errstate(all='ignore'):
    return 1200.0 * np.log2(np.asarray(f0_hz, np.float64) / midi_to_hz(midi_pitch))


def spectral_flatness(audio: np.ndarray) -> np.ndarray:
  """Median over frames of librosa's spectral flatness (n_fft 2048, hop 512): [N, T] -> [N]."""
  flatness = librosa.feature.spectral_flatness(y=np.asarray(audio, np.float32))  # [N, 1, frames]
  return np.median(flatness[:, 0], axis=-1)


def rms(audio: np.ndarray) -> np.ndarray:
  """Root mean square of each clip: [N, T] -> [N]."""
  return np.sqrt(np.mean(np.square(np.asarray(audio, np.float64)), axis=-1))


def fundamental_share(audio: np.ndarray, midi_pitch: Sequence[float] | np.ndarray, sample_rate: int,
                      num_harmonics: int = SHARE_HARMONICS) -> np.ndarray:
  """The fraction of each clip's energy up to its `num_harmonics`-th harmonic that lies around its fundamental.

  The power spectrum of the whole clip (Hann window) summed over [0.5, 1.5) x f0, over the same sum over [0.5,
  num_harmonics + 0.5) x f0 cut at Nyquist, with f0 the requested pitch: bands, not peak bins, so a partial between
  two bins counts whole. [N, T], [N] -> [N]; 0 for a clip with no energy in those bands.
  """
  audio = np.asarray(audio, np.float64)
  power = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[-1]), axis=-1))**2
  ratio = np.fft.rfftfreq(audio.shape[-1], 1 / sample_rate)[None] / midi_to_hz(np.asarray(midi_pitch))[:, None]
  fundamental = np.where((ratio >= 0.5) & (ratio < 1.5), power, 0.0).sum(-1)
  total = np.where((ratio >= 0.5) & (ratio < num_harmonics + 0.5), power, 0.0).sum(-1)
  return np.divide(fundamental, total, out=np.zeros_like(total), where=total > 0)


def mfcc_means(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """librosa's MFCCs (20 coefficients, its defaults otherwise), averaged over time: [N, T] -> [N, 20]."""
  return np.stack(
      [librosa.feature.mfcc(y=clip, sr=sample_rate, n_mfcc=N_MFCC).mean(-1) for clip in np.asarray(audio, np.float32)])


def mean_distance_between_groups(features: np.ndarray, groups: np.ndarray | None = None) -> float:
  """Mean L2 distance over pairs of rows that belong to different groups (all pairs when `groups` is None)."""
  d = distance.squareform(distance.pdist(np.asarray(features, np.float64)))
  i, j = np.triu_indices(len(d), k=1)
  if groups is not None:
    groups = np.asarray(groups)
    keep = groups[i] != groups[j]
    i, j = i[keep], j[keep]
  if not len(i):
    raise ValueError('Need at least two rows in different groups to measure distances between them.')
  return float(d[i, j].mean())


def _summary(values: np.ndarray) -> dict[str, float]:
  """Median and 10th / 90th percentiles."""
  p10, median, p90 = np.percentile(values, [10, 50, 90])
  return {'median': float(median), 'p10': float(p10), 'p90': float(p90)}


def clip_measures(audio: np.ndarray, midi_pitch: Sequence[int] | np.ndarray, sample_rate: int) -> dict:
  """Per-clip listening measures.

  Args:
    audio: [N, T] waveforms.
    midi_pitch: [N] the MIDI pitch each clip was asked to have.
    sample_rate: Hz.

  Returns:
    'midi_pitch', 'f0_hz' (NaN if unvoiced), 'cents' (signed; NaN if unvoiced), 'voiced', 'flatness', 'rms',
    'fundamental_share', 'end_db' (`end_level_db`): [N].
  """
  midi_pitch = np.asarray(midi_pitch)
  f0, voiced = estimate_pitch(audio, sample_rate)
  return {
      'midi_pitch': midi_pitch,
      'f0_hz': f0,
      'cents': cents_off(f0, midi_pitch),
      'voiced': voiced,
      'flatness': spectral_flatness(audio),
      'rms': rms(audio),
      'fundamental_share': fundamental_share(audio, midi_pitch, sample_rate),
      'end_db': end_level_db(audio, sample_rate)
  }


def summarise(clips: dict) -> dict:
  """Summary of `clip_measures` overall and per requested pitch.

  Returns:
    {'num_clips', 'in_tune_50c', 'in_tune_100c' (fractions; an unvoiced clip is out of tune), 'voiced' (mean
    fraction), 'abs_cents' (median over voiced clips; None when none is), 'flatness', 'rms' and 'fundamental_share'
    ({'median', 'p10', 'p90'}), 'pure_tones' (the fraction of clips whose fundamental share is above
    PURE_TONE_SHARE), 'end_db' ({'max', 'median'}: how far below its peak a clip ends, the loudest ending and the
    median), 'per_pitch': {midi: {'num_clips', 'in_tune_50c', 'in_tune_100c', 'voiced', 'median_f0_hz', 'pure_tones',
    'end_db_max'}}}.
  """
  midi_pitch, f0 = clips['midi_pitch'], clips['f0_hz']
  cents = np.abs(clips['cents'])
  pure = clips['fundamental_share'] > PURE_TONE_SHARE
  in_50 = np.nan_to_num(cents, nan=np.inf) <= 50.0
  in_100 = np.nan_to_num(cents, nan=np.inf) <= 100.0
  per_pitch = {}
  for p in np.unique(midi_pitch):
    sel = midi_pitch == p
    voiced_f0 = f0[sel][np.isfinite(f0[sel])]
    per_pitch[int(p)] = {
        'num_clips': int(sel.sum()),
        'in_tune_50c': float(in_50[sel].mean()),
        'in_tune_100c': float(in_100[sel].mean()),
        'voiced': float(clips['voiced'][sel].mean()),
        'median_f0_hz': float(np.median(voiced_f0)) if len(voiced_f0) else None,
        'pure_tones': float(pure[sel].mean()),
        'end_db_max': float(clips['end_db'][sel].max())
    }
  finite = np.isfinite(cents)
  return {
      'num_clips': int(len(midi_pitch)),
      'in_tune_50c': float(in_50.mean()),
      'in_tune_100c': float(in_100.mean()),
      'voiced': float(clips['voiced'].mean()),
      'abs_cents': float(np.median(cents[finite])) if finite.any() else None,
      'flatness': _summary(clips['flatness']),
      'rms': _summary(clips['rms']),
      'fundamental_share': _summary(clips['fundamental_share']),
      'pure_tones': float(pure.mean()),
      'end_db': {
          'max': float(clips['end_db'].max()),
          'median': float(np.median(clips['end_db']))
      },
      'per_pitch': per_pitch
  }


def measure(audio: np.ndarray, midi_pitch: Sequence[int] | np.ndarray, sample_rate: int) -> dict:
  """`summarise(clip_measures(audio, midi_pitch, sample_rate))`."""
  return summarise(clip_measures(audio, midi_pitch, sample_rate))


def distinctness(audio: np.ndarray, midi_pitch: np.ndarray, groups: np.ndarray, reference_audio: np.ndarray,
                 reference_midi_pitch: np.ndarray, sample_rate: int) -> dict:
  """How different translations of different faces sound, relative to real notes of the same pitch.

  At each pitch present in both sets: mean MFCC distance between clips of different groups (faces) divided by
  the mean MFCC distance between the reference clips (real notes) of that pitch.

  Args:
    audio: [N, T] translations.
    midi_pitch: [N] their requested MIDI pitches.
    groups: [N] who each clip translates (e.g. identity names); only pairs of different groups count.
    reference_audio: [M, T] real notes.
    reference_midi_pitch: [M] their MIDI pitches.
    sample_rate: Hz.

  Returns:
    {'mean': mean of the per-pitch ratios, 'per_pitch': {midi: ratio}}.
  """
  midi_pitch, reference_midi_pitch = np.asarray(midi_pitch), np.asarray(reference_midi_pitch)
  feats, ref_feats = mfcc_means(audio, sample_rate), mfcc_means(reference_audio, sample_rate)
  ratios = {}
  for p in np.unique(midi_pitch):
    ref = reference_midi_pitch == p
    if ref.sum() < 2:
      continue
    sel = midi_pitch == p
    ratios[int(p)] = (mean_distance_between_groups(feats[sel],
                                                   np.asarray(groups)[sel]) /
                      mean_distance_between_groups(ref_feats[ref]))
  if not ratios:
    raise ValueError('No pitch has both translations and at least two reference notes (real notes) to compare.')
  return {'mean': float(np.mean(list(ratios.values()))), 'per_pitch': ratios}


def harmonic_tone(midi_pitch: np.ndarray, length: int, sample_rate: int, num_harmonics: int = 10,
                  noise_db: float | None = None, seed: int = 0) -> np.ndarray:
  """Reference tones: harmonics k f0 (k <= num_harmonics, below Nyquist) with amplitudes 1/k, RMS 0.05.

  Args:
    midi_pitch: [N] MIDI pitches.
    length: samples per tone.
    sample_rate: Hz.
    num_harmonics: partials per tone (1 = a sine).
    noise_db: if given, white noise this many dB below the tone's power is added.
    seed: seed of the noise.

  Returns:
    [N, length] float32.
  """
  t = np.arange(length) / sample_rate
  tones = []
  rng = np.random.default_rng(seed)
  for f0 in midi_to_hz(midi_pitch):
    k = np.arange(1, num_harmonics + 1)
    k = k[k * f0 < sample_rate / 2]
    tone = np.sum(np.sin(2 * np.pi * f0 * k[:, None] * t[None]) / k[:, None], axis=0)
    tone *= 0.05 / np.sqrt(np.mean(tone**2))
    if noise_db is not None:
      tone += rng.normal(0, 0.05 * 10**(-noise_db / 20), length)
    tones.append(tone)
  return np.asarray(tones, np.float32)


def white_noise(num: int, length: int, seed: int = 0, scale: float = 0.05) -> np.ndarray:
  """[num, length] float32 Gaussian white noise of standard deviation `scale` (about the real notes' RMS)."""
  return np.random.default_rng(seed).normal(0, scale, (num, length)).astype(np.float32)
