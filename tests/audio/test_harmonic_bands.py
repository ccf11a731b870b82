"""The harmonic bands of D's harmonic branch: energies of real tones against their closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax.audio import harmonic_bands
from face2music_jax.audio import synthesis

SR = 16000
LENGTH = 8192


def _tone(f0_hz: float, amplitudes) -> np.ndarray:
  t = np.arange(LENGTH) / SR
  return sum(a * np.sin(2 * np.pi * (k + 1) * f0_hz * t + 0.3 * k) for k, a in enumerate(amplitudes))


@pytest.mark.parametrize('midi', [24.0, 36.0, 60.3, 84.0])
def test_a_sine_puts_three_eighths_of_its_squared_amplitude_in_band_one(midi):
  """A steady sine (at a pitch between FFT bins too) fills its own band, with 3 a^2 / 8 in the frames away from the
  note's ends, and leaves the other bands empty but for the window's leakage (at MIDI 24 a band is 4.2 bins wide,
  and band 2 starts 2.1 bins from the partial)."""
  f0 = float(synthesis.midi_to_hz(midi))
  audio = _tone(f0, [0.5])[None].astype(np.float32)
  energies = np.asarray(harmonic_bands.harmonic_band_energies(audio, np.array([f0]), num_harmonics=6, sample_rate=SR))
  assert energies.shape == (1, 1 + LENGTH // 512, 6)
  inner = energies[0, 4:-4]  # Frames whose window lies inside the note.
  np.testing.assert_allclose(inner[:, 0], 3 * 0.25 / 8, rtol=2e-3)
  assert inner[:, 1:].max() < 5e-4 * inner[:, 0].min()


def test_partials_land_in_their_bands_and_bands_above_nyquist_stay_empty():
  """Partials of amplitude 1/k: band k holds 1/k^2 of band 1; at 1046.5 Hz (MIDI 84) bands 9 and up start past
  8 kHz and hold nothing."""
  f0 = np.array([261.63, 1046.5])
  audio = np.stack([_tone(f, [1 / k for k in range(1, 8)]) for f in f0]).astype(np.float32)
  energies = np.asarray(harmonic_bands.harmonic_band_energies(audio, f0, num_harmonics=10, sample_rate=SR))[:, 8]
  np.testing.assert_allclose(energies[:, :7] / energies[:, :1], np.broadcast_to(1 / np.arange(1, 8)**2, (2, 7)),
                             rtol=2e-3)
  assert energies[0, 7:].max() < 1e-6 * energies[0, 0]  # No partials there.
  assert np.all(energies[1, 8:] == 0) and energies[1, 7] > 0  # Band 8 spans 7.85-8.9 kHz: the bins up to 8 kHz.


def test_band_weights_tile_the_bins_between_half_and_k_plus_half_f0():
  weights = np.asarray(
      harmonic_bands.band_weights(jnp.array([100.0, 333.3]), num_harmonics=4, n_fft=2048, sample_rate=SR))
  assert weights.shape == (2, 1025, 4) and weights.min() >= 0 and weights.max() <= 1
  # Each band is f0 wide, in bins f0 * n_fft / sr; no bin counts twice.
  np.testing.assert_allclose(weights.sum(1), np.array([[100.0], [333.3]]) * 2048 / SR * np.ones((1, 4)), rtol=1e-5)
  assert weights.sum(-1).max() <= 1 + 1e-6


def test_gradients_are_finite_on_silence_and_the_shapes_are_checked():
  grad = jax.grad(lambda a: jnp.sum(
      jnp.log10(harmonic_bands.harmonic_band_energies(a, jnp.array([130.8]), num_harmonics=8, sample_rate=SR) + 1e-7)))(
          jnp.zeros((1, LENGTH)))
  assert bool(jnp.all(jnp.isfinite(grad)))
  with pytest.raises(ValueError, match='one fundamental per note'):
    harmonic_bands.harmonic_band_energies(np.zeros((2, LENGTH), np.float32), np.array([100.0]), num_harmonics=4,
                                          sample_rate=SR)
