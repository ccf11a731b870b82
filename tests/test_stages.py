"""Helpers of the prerequisite stages: the pairwise distance statistics."""

import numpy as np
from scipy.spatial.distance import pdist

from face2music_jax import stages


def test_pairwise_distance_stats_estimate_the_mean_and_std_over_all_pairs():
  x = np.random.default_rng(0).normal(size=(60, 5))
  exact = pdist(x)
  mu, sigma = stages.pairwise_distance_stats(x, num_pairs=200_000, seed=3)
  np.testing.assert_allclose(mu, exact.mean(), rtol=0.01)
  np.testing.assert_allclose(sigma, exact.std(), rtol=0.02)
  assert stages.pairwise_distance_stats(x, 1000, seed=3) == stages.pairwise_distance_stats(x, 1000, seed=3)
