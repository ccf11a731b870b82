"""The correlation evaluator: Pearson of face and audio distances on two rulers, phi and the MFCC means."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from face2music_jax.evaluators import correlation


def _pearson_at_each_pitch(faces, audio_features, midi):
  return {
      int(p): stats.pearsonr(distance.pdist(faces[midi == p]), distance.pdist(audio_features[midi == p]))[0]
      for p in np.unique(midi)
  }


def test_each_ruler_is_the_mean_over_pitches_of_one_pitchs_pearson():
  rng = np.random.default_rng(0)
  faces = rng.normal(size=(12, 8))
  midi = np.repeat([48, 60], 6)
  # phi follows the faces closely, the MFCC means loosely: the two rulers must not be mixed up.
  phi = np.concatenate([faces, 0.1 * rng.normal(size=(12, 8))], axis=1)
  mfcc = faces[:, :3] + rng.normal(size=(12, 3))
  real_phi = rng.normal(size=(20, 16))
  result = correlation.evaluate(listened_faces=faces, listened_phi=phi, listened_mfcc=mfcc, listened_midi=midi, z=faces,
                                fake_phi=phi, face_index=np.arange(12), real_phi=real_phi,
                                real_family=np.arange(20) % 4, num_families=4)
  expected_phi = _pearson_at_each_pitch(faces, phi, midi)
  expected_mfcc = _pearson_at_each_pitch(faces, mfcc, midi)
  assert result['pearson_per_pitch'] == pytest.approx(expected_phi)
  assert result['pearson_mfcc_per_pitch'] == pytest.approx(expected_mfcc)
  assert result['metrics']['pearson_correlation'] == pytest.approx(np.mean(list(expected_phi.values())))
  assert result['metrics']['pearson_mfcc'] == pytest.approx(np.mean(list(expected_mfcc.values())))
  assert result['metrics']['pearson_correlation'] > 0.9 > result['metrics']['pearson_mfcc']


def test_a_pitch_with_too_few_translations_is_left_out_of_the_mean():
  rng = np.random.default_rng(1)
  faces = rng.normal(size=(7, 4))
  midi = np.array([48] * 5 + [60] * 2)  # Two translations at MIDI 60: one pair, no correlation.
  mfcc = rng.normal(size=(7, 20))
  result = correlation.evaluate(listened_faces=faces, listened_phi=faces, listened_mfcc=mfcc, listened_midi=midi,
                                z=faces, fake_phi=faces, face_index=np.arange(7), real_phi=rng.normal(size=(6, 4)),
                                real_family=np.arange(6) % 2, num_families=2)
  assert result['pearson_mfcc_per_pitch'][60] is None
  assert result['metrics']['pearson_mfcc'] == pytest.approx(
      stats.pearsonr(distance.pdist(faces[:5]), distance.pdist(mfcc[:5]))[0])
