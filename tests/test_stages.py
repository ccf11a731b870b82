"""The prerequisite stages: data built in two processes, the pairwise distance statistics, corrupt artefacts set
aside."""

import glob
import os

import subprocess

import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy.spatial.distance import pdist

from face2music_jax import checkpoint
from face2music_jax import files
from face2music_jax import stages
from face2music_jax.data import default_faces
from face2music_jax.data import notes as notes_data
from tests import helpers
from tests import test_checkpoint


def _data_config(data_dir: str):
  config = helpers.tiny_config()
  config.data_dir = data_dir
  return config


def test_the_notes_built_in_the_second_process_are_those_built_here(tiny_data_dir, tmp_path):
  # The shared tiny data were built with the notes in a second process (both were missing); these here.
  shared = notes_data.notes_builder(_data_config(tiny_data_dir))
  config = _data_config(str(tmp_path))
  here = notes_data.prepare_notes(config)
  assert default_faces.is_built(_data_config(tiny_data_dir)) and not default_faces.is_built(config)
  for split in ('train', 'test'):
    read = lambda builder, split=split: sorted(
        ((n['id'], n['audio'].tobytes()) for n in builder.as_dataset(split=split).as_numpy_iterator()))
    assert read(shared) == read(here)


def test_an_error_of_the_second_process_is_raised_here_after_the_faces_are_built(tmp_path):
  config = _data_config(str(tmp_path / 'data'))
  garbage = tmp_path / 'garbage.sf2'  # Read first by the renderer, in the second process.
  garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
  config.notes.soundfont = str(garbage)
  with pytest.raises(notes_data.SoundFontError, match='garbage.sf2'):
    stages.ensure_data(config)
  assert default_faces.is_built(config) and not notes_data.notes_builder(config).is_prepared()


def test_a_stop_while_the_faces_are_embedded_ends_the_second_process(tmp_path, monkeypatch):
  started = []
  popen = subprocess.Popen
  monkeypatch.setattr(subprocess, 'Popen', lambda *a, **k: started.append(popen(*a, **k)) or started[-1])

  def stopped(config):
    del config
    raise KeyboardInterrupt  # As SIGTERM's Preempted or Ctrl-C would, here.

  monkeypatch.setattr(default_faces, 'prepare_default_faces', stopped)
  config = _data_config(str(tmp_path / 'data'))
  with pytest.raises(KeyboardInterrupt):
    stages.ensure_data(config)
  assert len(started) == 1 and started[0].returncode is not None  # Ended and waited for, not left running.
  assert not notes_data.notes_builder(config).is_prepared()


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
