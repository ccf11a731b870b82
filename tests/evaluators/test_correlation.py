"""The correlation evaluator: Pearson of face and audio distances on two rulers, phi and the MFCC means (the latter
over pairs of different people, as on photos)."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from face2music_jax.evaluators import correlation


def _pearson_at_each_pitch(faces, audio_features, midi, identity=None):
  out = {}
  for p in np.unique(midi):
    at = midi == p
    i, j = np.triu_indices(np.count_nonzero(at), k=1)
    keep = np.ones(len(i), bool) if identity is None else identity[at][i] != identity[at][j]
    d_face = np.linalg.norm(faces[at][i] - faces[at][j], axis=1)[keep]
    d_audio = np.linalg.norm(audio_features[at][i] - audio_features[at][j], axis=1)[keep]
    out[int(p)] = stats.pearsonr(d_face, d_audio)[0]
  return out


def test_each_ruler_is_the_mean_over_pitches_of_one_pitchs_pearson_the_mfccs_over_different_people():
  rng = np.random.default_rng(0)
  faces = rng.normal(size=(12, 8))
  midi = np.repeat([48, 60], 6)
  identity = np.array(['a', 'a', 'b', 'c', 'c', 'd'] * 2)
  faces[[1, 4, 7, 10]] = faces[[0, 3, 6, 9]] + 0.01  # Two views of a person, near in face space.
  # phi follows the faces closely, the MFCC means loosely: the two rulers must not be mixed up.
  phi = np.concatenate([faces, 0.1 * rng.normal(size=(12, 8))], axis=1)
  mfcc = faces[:, :3] + rng.normal(size=(12, 3))
  real_phi = rng.normal(size=(20, 16))
  mfcc[[1, 4, 7, 10]] = mfcc[[0, 3, 6, 9]] + 5  # Far apart in the MFCCs: their pairs would change the figure.
  result = correlation.evaluate(listened_faces=faces, listened_phi=phi, listened_mfcc=mfcc, listened_midi=midi,
                                listened_identity=identity, z=faces, fake_phi=phi, face_index=np.arange(12),
                                real_phi=real_phi, real_family=np.arange(20) % 4, num_families=4)
  expected_phi = _pearson_at_each_pitch(faces, phi, midi)
  expected_mfcc = _pearson_at_each_pitch(faces, mfcc, midi, identity)
  assert expected_mfcc != pytest.approx(_pearson_at_each_pitch(faces, mfcc, midi), abs=0.01)
  assert result['pearson_per_pitch'] == pytest.approx(expected_phi)
  assert result['pearson_mfcc_per_pitch'] == pytest.approx(expected_mfcc)
  assert result['metrics']['pearson_correlation'] == pytest.approx(np.mean(list(expected_phi.values())))
  assert result['metrics']['pearson_mfcc'] == pytest.approx(np.mean(list(expected_mfcc.values())))
  assert result['metrics']['pearson_correlation'] > 0.9 > result['metrics']['pearson_mfcc']


def test_a_pitch_with_too_few_pairs_of_different_people_is_left_out_of_the_mean():
  rng = np.random.default_rng(1)
  faces = rng.normal(size=(8, 4))
  midi = np.array([48] * 5 + [60] * 3)  # At MIDI 60 three translations, two of one person: two pairs, no correlation.
  identity = np.array(['a', 'b', 'c', 'd', 'e', 'a', 'a', 'b'])
  mfcc = rng.normal(size=(8, 20))
  result = correlation.evaluate(listened_faces=faces, listened_phi=faces, listened_mfcc=mfcc, listened_midi=midi,
                                listened_identity=identity, z=faces, fake_phi=faces, face_index=np.arange(8),
                                real_phi=rng.normal(size=(6, 4)), real_family=np.arange(6) % 2, num_families=2)
  assert result['pearson_mfcc_per_pitch'][60] is None and result['pearson_per_pitch'][60] is not None
  assert result['metrics']['pearson_mfcc'] == pytest.approx(
      stats.pearsonr(distance.pdist(faces[:5]), distance.pdist(mfcc[:5]))[0])
