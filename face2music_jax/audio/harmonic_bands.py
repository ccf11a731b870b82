"""A note's energy in bands around its harmonics, frame by frame: its timbre on an axis relative to its pitch.

Band k (k = 1..K) spans [k - 0.5, k + 0.5) x f0, so together the bands tile [0.5, K + 0.5) x f0 and a partial counts
whole wherever it falls between FFT bins (as `listening.fundamental_share` sums them over the whole note). Each FFT
bin is a unit interval around its centre frequency and adds its power times the fraction of that interval inside the
band, so the band sums move smoothly with f0. Bands above Nyquist hold nothing.

On this axis a note's partials sit in the same band at every pitch: the discriminator's harmonic branch
(models/discriminator.py) compares a translation's partials with those of real notes of its pitch without having to
find them among the FFT bins first.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from face2music_jax.audio import mfcc as mfcc_lib

_FLOAT32 = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
  """The periodic Hann window divided by its sum: a steady sine of amplitude a then puts 3 a^2 / 8 in its band."""
  window = scipy.signal.get_window('hann', n_fft, fftbins=True)
  return (window / window.sum()).astype(np.float32)


def band_weights(f0_hz: jax.Array, *, num_harmonics: int, n_fft: int, sample_rate: int) -> jax.Array:
  """[B] fundamentals in Hz -> [B, n_fft // 2 + 1, num_harmonics] weights of each FFT bin in each harmonic band.

  A bin centred at frequency index i covers [i - 0.5, i + 0.5) in bins; its weight in a band is the length of the
  overlap (0 to 1). Bins past Nyquist do not exist, so bands above it get nothing.
  """
  f0_bins = jnp.asarray(f0_hz, jnp.float32)[:, None] * (n_fft / sample_rate)  # [B, 1]
  k = jnp.arange(1, num_harmonics + 1, dtype=jnp.float32)[None]  # [1, K]
  low, high = (k - 0.5) * f0_bins, (k + 0.5) * f0_bins  # [B, K]
  centre = jnp.arange(n_fft // 2 + 1, dtype=jnp.float32)[None, :, None]  # [1, F, 1]
  overlap = jnp.minimum(centre + 0.5, high[:, None]) - jnp.maximum(centre - 0.5, low[:, None])
  return jnp.clip(overlap, 0.0, 1.0)


def harmonic_band_energies(audio: jax.Array, f0_hz: jax.Array, *, num_harmonics: int, sample_rate: int,
                           n_fft: int = 2048, hop_length: int = 512) -> jax.Array:
  """Power in each harmonic band of each centred frame (librosa's STFT framing, a periodic Hann window).

  Args:
    audio: [B, T] float32 waveforms at `sample_rate` Hz.
    f0_hz: [B] each note's fundamental in Hz (its requested pitch).
    num_harmonics: bands K.
    sample_rate: sampling rate in Hz.
    n_fft: FFT size (bins sample_rate / n_fft Hz apart: 7.8 Hz for 2048 at 16 kHz, so that a band spans 4.2 bins
      at MIDI 24 and 8.4 at MIDI 36).
    hop_length: hop between frames in samples.

  Returns:
    [B, frames, K] float32 band powers; a steady sine of amplitude a at f0 has 3 a^2 / 8 in band 1 and nothing in
    the others (to the window's leakage).
  """
  audio = jnp.asarray(audio, jnp.float32)
  if audio.ndim != 2 or jnp.shape(f0_hz) != (audio.shape[0],):
    raise ValueError(f'Expected audio [B, T] and one fundamental per note [B]; got {audio.shape} and '
                     f'{jnp.shape(f0_hz)}.')
  weights = band_weights(f0_hz, num_harmonics=num_harmonics, n_fft=n_fft, sample_rate=sample_rate)
  return mfcc_lib.power_spectrogram(audio, _window(n_fft), n_fft, hop_length,
                                    lambda power: jnp.einsum('bcf,bfk->bck', power, weights, precision=_FLOAT32))
