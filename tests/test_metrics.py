"""The Table 1 measures on inputs with known answers."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk_metrics

from face2music_jax import metrics


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
  x = np.random.default_rng(0).normal(size=(500, 8))
  assert abs(metrics.frechet_distance(x, x)) < 1e-6
  fids = [metrics.frechet_distance(x, x + shift) for shift in (0.1, 0.5, 1.0, 2.0)]
  assert all(a < b for a, b in zip(fids, fids[1:]))
  np.testing.assert_allclose(fids, [8 * s**2 for s in (0.1, 0.5, 1.0, 2.0)], rtol=1e-6)  # ||mu_a - mu_b||^2.


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


def test_pearson_leaves_out_the_pairs_of_a_face_with_itself():
  # 10 faces, each translated at 2 pitches: the audio is the face plus a pitch offset. A face paired with itself is
  # at distance 0 in face space and at the pitch offset in audio space: a pair that measures the pitch alone.
  rng = np.random.default_rng(4)
  faces = rng.normal(size=(10, 3))
  face_index = np.tile(np.arange(10), 2)
  x = faces[face_index]
  y = x + np.repeat([[0.0, 0, 0], [4.0, 0, 0]], 10, axis=0)
  r, _ = metrics.distance_correlation(x, y, groups=face_index)
  pairs = [(i, j) for i in range(20) for j in range(i + 1, 20) if face_index[i] != face_index[j]]
  expected = np.corrcoef([np.linalg.norm(x[i] - x[j]) for i, j in pairs],
                         [np.linalg.norm(y[i] - y[j]) for i, j in pairs])[0, 1]
  assert len(pairs) == 20 * 19 // 2 - 10
  assert r == pytest.approx(expected, abs=1e-12)
  assert metrics.distance_correlation(x, y)[0] < r - 0.05  # With the self-pairs the faces explain less.
  with pytest.raises(ValueError, match='different groups'):
    metrics.distance_correlation(x[:3], y[:3], groups=np.array([0, 0, 1]))


def test_the_bootstrap_interval_of_a_distance_correlation_holds_it_and_narrows_with_more_rows():
  """Faces x and notes y = x's first coordinates plus noise, at two "pitches": the interval holds the full sample's
  mean correlation, is the same for the same seed, narrows about as 1/sqrt(N) and is None below 5 rows."""
  rng = np.random.default_rng(0)

  def sample(n):
    x = rng.normal(size=(n, 16))
    return x, [x[:, :4] + rng.normal(scale=s, size=(n, 4)) for s in (1.0, 1.5)]

  widths = []
  for n in (40, 400):
    x, ys = sample(n)
    full = np.mean([metrics.distance_correlation(x, y)[0] for y in ys])
    low, high = metrics.distance_correlation_interval(x, ys, num_resamples=200)
    assert low < full < high
    assert metrics.distance_correlation_interval(x, ys, num_resamples=200) == (low, high)
    widths.append(high - low)
  assert 0.15 < widths[1] / widths[0] < 0.6  # sqrt(40 / 400) = 0.32
  x, ys = sample(4)
  assert metrics.distance_correlation_interval(x, ys) is None


def test_silhouette_matches_sklearn_and_is_none_when_undefined():
  rng = np.random.default_rng(3)
  labels = np.repeat([0, 1, 2], 10)
  x = rng.normal(size=(30, 4)) + 5 * labels[:, None]
  assert metrics.silhouette_value(x, labels) == pytest.approx(sk_metrics.silhouette_score(x, labels))
  assert metrics.silhouette_value(x, labels) > 0.7  # Well separated clusters.
  assert metrics.silhouette_value(x, np.zeros(30, int)) is None
  assert metrics.silhouette_value(x, np.arange(30)) is None


def test_family_distribution_interval_brackets_the_counts_and_narrows_with_more_faces():
  """Resampling whole groups (faces with their notes): the intervals hold the full set's figures, repeat with the
  seed, narrow as the groups grow in number (about as 1/sqrt(n)), are a point where every group holds one family,
  and are None under 5 groups."""
  families = tuple('abcdefghij')
  rng = np.random.default_rng(0)
  widths = []
  for n in (40, 400):
    # Each face's 4 notes mostly of one family, its own: skewed towards the first families.
    own = rng.choice(10, n, p=np.arange(10, 0, -1) / 55)
    labels = np.where(rng.random((n, 4)) < 0.8, own[:, None], rng.integers(0, 10, (n, 4))).ravel()
    groups = np.repeat(np.arange(n), 4)
    full = metrics.family_distribution(labels, families)
    interval = metrics.family_distribution_interval(labels, groups, families)
    low, high = interval['effective_number']
    assert low < full['effective_number'] < high
    assert interval['largest_share'][0] < full['largest_share'] < interval['largest_share'][1]
    assert metrics.family_distribution_interval(labels, groups, families) == interval
    widths.append(high - low)
  assert 0.15 < widths[1] / widths[0] < 0.6  # sqrt(40 / 400) = 0.32
  one = metrics.family_distribution_interval(np.full(20, 3), np.arange(20), families)
  assert one == {'effective_number': (1.0, 1.0), 'largest_share': (1.0, 1.0)}
  assert metrics.family_distribution_interval(np.arange(8), np.repeat(np.arange(4), 2), families) is None


def test_nearest_centroid_labels():
  reference = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
  labels = metrics.nearest_centroid_labels(np.array([[1.0, 1.0], [9.0, 5.0]]), reference, np.array([3, 3, 7, 7]))
  np.testing.assert_array_equal(labels, [3, 7])


def test_family_distribution_counts_shares_and_the_effective_number():
  families = ('bass', 'brass', 'flute', 'guitar')
  even = metrics.family_distribution(np.array([0, 1, 2, 3] * 5), families)
  assert even['counts'] == {f: 5 for f in families}
  assert even['effective_number'] == pytest.approx(4.0) and even['largest_share'] == 0.25
  one = metrics.family_distribution(np.array([2, 2, 2]), families)
  assert one['counts'] == {'bass': 0, 'brass': 0, 'flute': 3, 'guitar': 0} and one['effective_number'] == 1.0
  assert one['largest_share'] == 1.0
  skewed = metrics.family_distribution(np.array([0, 0, 0, 1]), families)  # exp(entropy) of shares 3/4, 1/4.
  assert skewed['effective_number'] == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
  with pytest.raises(ValueError, match=r'labels in \[0, 4\)'):  # Not silently dropped from the counts.
    metrics.family_distribution(np.array([0, 4]), families)


def test_welch_interval_matches_scipy_and_needs_two_values_per_group():
  a, b = np.array([0.41, 0.44, 0.36, 0.40]), np.array([0.08, 0.15, 0.02])
  difference, low, high = metrics.welch_interval(a, b)
  interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert difference == pytest.approx(a.mean() - b.mean())
  assert (low, high) == pytest.approx((interval.low, interval.high))
  assert low < difference < high and low > 0  # These two groups differ.
  _, low, high = metrics.welch_interval(np.array([1.0, 2.0]), np.array([1.5, 1.4]))
  assert low < 0 < high  # These do not, at 2 seeds.
  assert metrics.welch_interval(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == (1.0, 1.0, 1.0)
  assert metrics.welch_interval(np.array([1.0]), b) is None
