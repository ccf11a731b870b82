"""Helpers of the prerequisite stages: the pairwise distance statistics, corrupt artefacts set aside."""

import glob
import os

import numpy as np
import orbax.checkpoint as ocp
from scipy.spatial.distance import pdist

from face2music_jax import checkpoint
from face2music_jax import files
from face2music_jax import stages
from tests import test_checkpoint


def test_pairwise_distance_stats_estimate_the_mean_and_std_over_all_pairs():
  x = np.random.default_rng(0).normal(size=(60, 5))
  exact = pdist(x)
  mu, sigma = stages.pairwise_distance_stats(x, num_pairs=200_000, seed=3)
  np.testing.assert_allclose(mu, exact.mean(), rtol=0.01)
  np.testing.assert_allclose(sigma, exact.std(), rtol=0.02)
  assert stages.pairwise_distance_stats(x, 1000, seed=3) == stages.pairwise_distance_stats(x, 1000, seed=3)


def test_a_corrupt_artefact_is_set_aside_so_that_its_stage_runs_again(tmp_path, caplog):
  path = str(tmp_path / 'classifiers' / 'pitch')
  checkpoint.save_artefact(path, {'w': np.arange(5000, dtype=np.float32)})
  like = {'w': np.zeros(5000, np.float32)}
  np.testing.assert_array_equal(stages._restored(path, like)['w'], np.arange(5000))
  test_checkpoint.flip_one_bit(path)
  assert stages._restored(path, like) is None  # The stage reruns.
  assert not os.path.exists(path) and len(glob.glob(f'{path}.corrupt-*')) == 1
  assert f'{path}' in caplog.text and 'the stage runs again' in caplog.text

  stats = str(tmp_path / 'statistics.json')
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0}, checksum=True)
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) == {'mu_x': 1.0, 'sigma_x': 2.0}
  assert stages._read_json(stats, ('mu_x', 'mu_y')) is None  # Incomplete: set aside.
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0}, checksum=True)
  with open(stats) as f:
    text = f.read()
  with open(stats, 'w') as f:
    f.write(text.replace('2.0', '3.0'))
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) is None
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0})  # Its checksum key gone: never accepted unverified.
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) is None
  assert sorted(os.listdir(tmp_path)) == [
      'classifiers', 'statistics.json.corrupt-checksum', 'statistics.json.corrupt-checksum-2',
      'statistics.json.corrupt-checksum-3'
  ]


def test_an_artefact_without_its_checksums_is_set_aside(tmp_path):
  """Damaged metadata can read as metadata without checksums: the artefact is not used unverified."""
  path = str(tmp_path / 'audio_embedding')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, {'w': np.arange(10, dtype=np.float32)})  # As save_artefact, but without checksums.
  checkpointer.wait_until_finished()
  assert stages._restored(path, {'w': np.zeros(10, np.float32)}) is None
  assert os.listdir(tmp_path) == ['audio_embedding.corrupt-unchecksummed']
