"""The Table 1 measures on inputs with known answers."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from face2music_jax import metrics


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
  x = np.random.default_rng(0).normal(size=(500, 8))
  assert abs(metrics.frechet_distance(x, x)) < 1e-6
  fids = [metrics.frechet_distance(x, x + shift) for shift in (0.1, 0.5, 1.0, 2.0)]
  assert all(a < b for a, b in zip(fids, fids[1:]))
  np.testing.assert_allclose(fids, [8 * s ** 2 for s in (0.1, 0.5, 1.0, 2.0)], rtol=1e-6)  # ||mu_a - mu_b||^2.


def test_fid_with_fewer_examples_than_features_is_finite():
  rng = np.random.default_rng(1)
  assert np.isfinite(metrics.frechet_distance(rng.normal(size=(16, 128)), rng.normal(size=(16, 128))))


def test_inception_score_of_uniform_and_of_confident_even_predictions():
  assert metrics.inception_score(np.full((40, 5), 0.2)) == pytest.approx(1.0)
  confident = np.eye(5)[np.arange(40) % 5]
  assert metrics.inception_score(confident) == pytest.approx(5.0)
  assert metrics.inception_score(np.eye(5)[np.zeros(40, int)]) == pytest.approx(1.0)  # Confident, one class.


def test_pearson_of_identical_distances_is_one():
  x = np.random.default_rng(2).normal(size=(20, 6))
  assert metrics.distance_correlation(x, x)[0] == pytest.approx(1.0)
  assert metrics.distance_correlation(x, 3 * x + 1)[0] == pytest.approx(1.0)  # Distances scale by 3.
  assert np.isnan(metrics.distance_correlation(x, np.ones((20, 3)))[0])  # Undefined: all distances 0.


def test_silhouette_matches_sklearn_and_is_none_when_undefined():
  rng = np.random.default_rng(3)
  labels = np.repeat([0, 1, 2], 10)
  x = rng.normal(size=(30, 4)) + 5 * labels[:, None]
  assert metrics.silhouette_value(x, labels) == pytest.approx(sk_metrics.silhouette_score(x, labels))
  assert metrics.silhouette_value(x, labels) > 0.7  # Well separated clusters.
  assert metrics.silhouette_value(x, np.zeros(30, int)) is None
  assert metrics.silhouette_value(x, np.arange(30)) is None


def test_nearest_centroid_labels():
  reference = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
  labels = metrics.nearest_centroid_labels(np.array([[1.0, 1.0], [9.0, 5.0]]), reference, np.array([3, 3, 7, 7]))
  np.testing.assert_array_equal(labels, [3, 7])
