"""Mel-frequency cepstral coefficients in JAX, equal to `librosa.feature.mfcc` per clip.

The chain is librosa's: centred STFT (zero padding, periodic Hann window) -> power spectrum -> Slaney mel
filterbank (built by `librosa.filters.mel` itself, once per parameter set) -> `power_to_db(ref=1.0, amin=1e-10,
top_db)` -> orthonormal DCT-II. It is jittable, batched and differentiable, so phi(y) can be computed on the
generator's output inside the training step.

librosa clips the dB floor at `max - top_db` where the max is taken over the whole array it is given; a batched
librosa call therefore differs from per-clip calls. Here the max is taken per clip, matching
`[librosa.feature.mfcc(y=clip, ...) for clip in audio]`.

Its two matrix products (mel filterbank, DCT) ask for full float32 precision: XLA's default precision may round
float32 products' inputs to fewer bits on accelerators (TF32 on NVIDIA GPUs, bfloat16 passes on TPUs), about 1e-3
relative, which is the tolerance of the comparison with librosa. They are a small part of phi.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import scipy.fft
import scipy.signal

# power_to_db's defaults, as librosa.feature.mfcc uses them.
_AMIN = 1e-10
_FLOAT32 = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=16)
def _constants(sample_rate: int, n_fft: int, n_mels: int, n_mfcc: int, fmin: float,
               fmax: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Window [n_fft], mel basis transposed [n_fft // 2 + 1, n_mels], DCT matrix [n_mels, n_mfcc] (float32)."""
  # librosa.stft's 'hann' is scipy's periodic (fftbins=True) Hann window.
  window = scipy.signal.get_window('hann', n_fft, fftbins=True).astype(np.float32)
  mel_basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False,
                                  norm='slaney', dtype=np.float32)
  # Row k of the orthonormal DCT-II of the identity is coefficient k's basis vector.
  dct = scipy.fft.dct(np.eye(n_mels), type=2, norm='ortho', axis=0)[:n_mfcc].astype(np.float32)
  return window, mel_basis.T.copy(), dct.T.copy()


def power_spectrogram(audio: jax.Array, window: np.ndarray, n_fft: int, hop_length: int,
                      project: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """`project` of the power spectrum of centred, zero-padded frames, as librosa's STFT (center=True) frames them.

  Args:
    audio: [B, T] float32 waveforms.
    window: [n_fft] analysis window.
    n_fft: FFT size (= window length) in samples.
    hop_length: hop between frames in samples.
    project: maps power spectra [B, frames', n_fft // 2 + 1] (any number of the frames, in any order) to [B,
      frames', P], acting on each frame alone (a mel filterbank, band sums).

  Returns:
    [B, 1 + T // hop_length, P] float32 (for n_fft divisible by 2), frames in time order.
  """
  padded = jnp.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)))
  batch, num_frames = audio.shape[0], 1 + (padded.shape[-1] - n_fft) // hop_length

  def power(frames):
    spectrum = jnp.fft.rfft(frames * window, axis=-1)
    return project(jnp.square(spectrum.real) + jnp.square(spectrum.imag))

  if n_fft % hop_length:
    index = hop_length * np.arange(num_frames)[:, None] + np.arange(n_fft)[None, :]
    return power(padded[:, index])
  # With R = n_fft / hop_length, frames r, r + R, r + 2R, ... tile the padded signal end to end: each such phase
  # is a reshape of one slice, so no overlapping copy of the frames is made (nor a gather, whose backward pass is
  # slow on XLA's CPU backend). The phases' projected spectra are interleaved back in time order.
  stride = n_fft // hop_length
  per_phase = -(-num_frames // stride)
  phases = []
  for r in range(min(stride, num_frames)):
    count = -(-(num_frames - r) // stride)
    frames = padded[:, r * hop_length:r * hop_length + count * n_fft].reshape(batch, count, n_fft)
    phases.append(jnp.pad(power(frames), ((0, 0), (0, per_phase - count), (0, 0))))
  interleaved = jnp.stack(phases, axis=2)
  return interleaved.reshape(batch, per_phase * len(phases), interleaved.shape[-1])[:, :num_frames]


def mfcc(audio: jax.Array, *, sample_rate: int, n_mfcc: int, n_fft: int, hop_length: int, n_mels: int, fmin: float,
         fmax: float | None, top_db: float | None) -> jax.Array:
  """MFCCs of each clip, as `librosa.feature.mfcc(y=clip, sr=sample_rate, ..., htk=False, norm='ortho')`.

  Args:
    audio: [B, T] or [T] float32 waveform(s) at `sample_rate` Hz.
    sample_rate: sampling rate in Hz.
    n_mfcc: number of cepstral coefficients kept.
    n_fft: FFT size (= window length) in samples.
    hop_length: hop between frames in samples.
    n_mels: number of mel bands.
    fmin: lowest mel band edge in Hz.
    fmax: highest mel band edge in Hz (None: sample_rate / 2).
    top_db: dynamic range kept below each clip's maximum, in dB (None: no floor).

  Returns:
    [B, n_mfcc, frames] float32, frames = 1 + T // hop_length for even n_fft (or [n_mfcc, frames] for [T]
    input).
  """
  squeeze = audio.ndim == 1
  audio = jnp.atleast_2d(jnp.asarray(audio, jnp.float32))
  window, mel_basis, dct = _constants(int(sample_rate), int(n_fft), int(n_mels), int(n_mfcc), float(fmin),
                                      None if fmax is None else float(fmax))
  mel = power_spectrogram(audio, window, n_fft, hop_length,
                          lambda power: jnp.matmul(power, mel_basis, precision=_FLOAT32))  # [B, frames, n_mels]
  # The amin floor keeps log10 and its gradient finite on silence (ref = 1.0 adds 0 dB).
  db = 10.0 * jnp.log10(jnp.maximum(mel, _AMIN))
  if top_db is not None:
    # Per-clip floor (librosa's is per array); ties in the max share its gradient, so it stays finite.
    floor = jnp.max(db, axis=(1, 2), keepdims=True) - top_db
    db = jnp.maximum(db, floor)
  coefficients = jnp.swapaxes(jnp.matmul(db, dct, precision=_FLOAT32), 1, 2)
  return coefficients[0] if squeeze else coefficients


def mfcc_from_config(audio: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """`mfcc` with the parameters of `config.mfcc` and `config.audio.sample_rate`; shapes as `mfcc`."""
  m = config.mfcc
  return mfcc(audio, sample_rate=config.audio.sample_rate, n_mfcc=m.n_mfcc, n_fft=m.n_fft, hop_length=m.hop_length,
              n_mels=m.n_mels, fmin=m.fmin, fmax=m.fmax, top_db=m.top_db)


def librosa_mfcc(audio: np.ndarray, *, sample_rate: int, n_mfcc: int, n_fft: int, hop_length: int, n_mels: int,
                 fmin: float, fmax: float | None, top_db: float | None) -> np.ndarray:
  """The reference: `librosa.feature.mfcc` clip by clip (numpy, not differentiable); arguments as `mfcc`.

  Returns:
    [B, n_mfcc, frames] float32 for [B, T] input ([n_mfcc, frames] for [T]).
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim == 1:
    return librosa_mfcc(audio[None], sample_rate=sample_rate, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length,
                        n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db)[0]
  out = []
  for clip in audio:
    mel = librosa.feature.melspectrogram(y=clip, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                         fmin=fmin, fmax=fmax, htk=False)
    out.append(librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=top_db), n_mfcc=n_mfcc, norm='ortho'))
  return np.stack(out)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
  """The largest per-clip max |got - want| / max |want| over a batch [B, ...] (the tests' error measure)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  axes = tuple(range(1, want.ndim))
  return float(np.max(np.max(np.abs(got - want), axis=axes) / np.max(np.abs(want), axis=axes)))
