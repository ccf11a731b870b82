"""The listening measures: they hear real notes in tune and noise out of tune, and they can fail."""

import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax.audio import listening
from face2music_jax.audio import synthesis
from face2music_jax.data import inputs

SR, LENGTH = 16000, 8192
PITCHES = np.repeat([36, 48, 60, 72], 2)


@pytest.mark.slow
def test_real_notes_are_in_tune_and_tonal(tiny_config):
  notes = inputs.Inputs(tiny_config).notes('train')
  midi = config_lib.midi_pitch(tiny_config, notes['pitch'])
  m = listening.measure(notes['audio'], midi, SR)
  assert m['in_tune_50c'] >= 0.95, m
  assert m['flatness']['median'] < 1e-3
  assert 0.005 < m['rms']['median'] < 0.3


def test_white_noise_is_out_of_tune_and_flat():
  m = listening.measure(listening.white_noise(len(PITCHES), LENGTH), PITCHES, SR)
  assert m['in_tune_50c'] <= 0.125, m
  assert m['flatness']['median'] > 0.3


def test_a_tone_a_semitone_off_is_out_of_tune_at_50_cents_and_in_at_one_semitone_of_the_quarter_tone():
  tones = listening.harmonic_tone(PITCHES, LENGTH, SR)
  assert listening.measure(tones, PITCHES, SR)['in_tune_50c'] == 1.0
  sharp = listening.measure(tones, PITCHES - 1, SR)  # Played a semitone above what was asked.
  assert sharp['in_tune_50c'] == 0.0
  quarter = listening.harmonic_tone(PITCHES + 0.75, LENGTH, SR)  # 75 cents sharp.
  m = listening.measure(quarter, PITCHES, SR)
  assert m['in_tune_50c'] == 0.0 and m['in_tune_100c'] == 1.0
  assert m['abs_cents'] == pytest.approx(75, abs=3)
  assert set(m['per_pitch']) == {36, 48, 60, 72}


def test_flatness_orders_tone_noisy_tone_and_noise():
  clean = listening.spectral_flatness(listening.harmonic_tone(PITCHES, LENGTH, SR))
  noisy = listening.spectral_flatness(listening.harmonic_tone(PITCHES, LENGTH, SR, noise_db=20))
  noise = listening.spectral_flatness(listening.white_noise(len(PITCHES), LENGTH))
  assert np.all(clean < 1e-5) and np.all(noisy > 1e-3) and np.all(noise > 0.3)


def test_the_fundamental_share_of_a_sine_a_tone_and_noise():
  share = lambda clips, midi: listening.fundamental_share(clips, midi, SR)
  np.testing.assert_allclose(share(listening.harmonic_tone(PITCHES, LENGTH, SR, num_harmonics=1), PITCHES), 1,
                             atol=1e-6)
  # Partials with amplitudes 1/k: the fundamental's share of the first eight is 1 / sum(1/k^2), a partial between two
  # bins (a quarter tone sharp) counts whole, and partials above the eighth do not count.
  expected = 1 / np.sum(1 / np.arange(1, 9)**2)
  for tones in (listening.harmonic_tone(PITCHES, LENGTH, SR, num_harmonics=8),
                listening.harmonic_tone(PITCHES + 0.25, LENGTH, SR,
                                        num_harmonics=8), listening.harmonic_tone(PITCHES, LENGTH, SR,
                                                                                  num_harmonics=20)):
    np.testing.assert_allclose(share(tones, PITCHES), expected, atol=2e-3)
  assert np.all(share(listening.white_noise(len(PITCHES), LENGTH), PITCHES) < 0.3)
  assert share(np.zeros((1, LENGTH)), [60])[0] == 0  # Silence: no fundamental, not a pure tone.
  m = listening.measure(listening.harmonic_tone(PITCHES, LENGTH, SR, num_harmonics=1), PITCHES, SR)
  assert m['pure_tones'] == 1 and all(v['pure_tones'] == 1 for v in m['per_pitch'].values())
  assert listening.measure(listening.harmonic_tone(PITCHES, LENGTH, SR), PITCHES, SR)['pure_tones'] == 0


def test_a_note_cut_while_loud_ends_near_its_peak_and_a_released_one_far_below():
  """end_db: the last 10 ms of a steady tone lie at its peak (a click); faded out over its last 50 ms by the
  synthesiser's release window, the same tone ends below -30 dB; `measure` reports the loudest ending overall and per
  pitch."""
  tones = listening.harmonic_tone(PITCHES, LENGTH, SR)
  released = tones * synthesis.release_window(LENGTH, SR, 0.05)
  cut, faded = listening.measure(tones, PITCHES, SR), listening.measure(released, PITCHES, SR)
  assert -1.0 < cut['end_db']['median'] <= cut['end_db']['max'] <= 0.0
  assert faded['end_db']['max'] <= -30.0 and faded['end_db']['median'] <= faded['end_db']['max']
  mixed = listening.measure(np.concatenate([released, tones[:1]]), np.append(PITCHES, PITCHES[0]), SR)
  assert mixed['end_db']['max'] == pytest.approx(cut['end_db']['max'], abs=1.0)  # One click decides the maximum.
  assert mixed['per_pitch'][36]['end_db_max'] > -1.0 and mixed['per_pitch'][72]['end_db_max'] <= -30.0


def test_distinctness_is_zero_for_identical_translations_and_about_one_for_real_notes(tiny_config):
  notes = inputs.Inputs(tiny_config).notes('train')
  midi = config_lib.midi_pitch(tiny_config, notes['pitch'])
  p = np.bincount(midi).argmax()
  real = notes['audio'][midi == p]
  same = np.repeat(real[:1], 4, axis=0)
  d = listening.distinctness(same, np.full(4, p), np.arange(4), real, np.full(len(real), p), SR)
  assert d['mean'] == pytest.approx(0.0, abs=1e-6)
  d = listening.distinctness(real, np.full(len(real), p), np.arange(len(real)), real, np.full(len(real), p), SR)
  assert d['mean'] == pytest.approx(1.0)
  # Pairs within one group do not count: two groups of identical clips are as distinct as the two clips.
  pair = np.concatenate([np.repeat(real[:1], 3, axis=0), np.repeat(real[1:2], 3, axis=0)])
  d = listening.distinctness(pair, np.full(6, p), np.repeat([0, 1], 3), real, np.full(len(real), p), SR)
  expected = (np.linalg.norm(np.subtract(*listening.mfcc_means(real[:2], SR))) /
              listening.mean_distance_between_groups(listening.mfcc_means(real, SR)))
  assert d['mean'] == pytest.approx(expected, rel=1e-6)
  with pytest.raises(ValueError, match='reference'):
    listening.distinctness(real, np.full(len(real), p), np.arange(len(real)), real[:1], np.array([p]), SR)
