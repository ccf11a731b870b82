"""Shared fixtures: the tiny embedded datasets are built once per test run, shared by pytest-xdist workers."""

import os

import filelock
import pytest

from face2music_jax import stages
from tests import helpers


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory) -> str:
  """A data dir holding the tiny config's SoundFont notes and default faces."""
  root = tmp_path_factory.getbasetemp().parent  # Shared by all xdist workers of this run.
  data_dir = str(root / 'tiny_data')
  with filelock.FileLock(str(root / 'tiny_data.lock')):
    config = helpers.tiny_config()
    config.data_dir = data_dir
    stages.ensure_data(config)
  return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path):
  """The tiny aux config on the shared tiny data, with its own workdir."""
  config = helpers.tiny_config('aux')
  config.data_dir = tiny_data_dir
  config.workdir = os.path.join(str(tmp_path), 'workdir')
  return config


@pytest.fixture(scope='session')
def trained_tiny_workdir(tiny_data_dir, tmp_path_factory) -> str:
  """One tiny aux model with the product's generator (harmonic) trained for its 4 steps, shared by every test (and
  every xdist worker) that only reads a trained model: translation, bundles, the photo evaluator."""
  from face2music_jax import train  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.getbasetemp().parent
  workdir = str(root / 'trained_tiny')
  with filelock.FileLock(str(root / 'trained_tiny.lock')):
    if not os.path.exists(os.path.join(workdir, 'done')):
      config = helpers.tiny_config('aux')
      config.data_dir = tiny_data_dir
      train.train(config, workdir)
      open(os.path.join(workdir, 'done'), 'w').close()
  return workdir


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory) -> str | None:
  """JAX's persistent compilation cache, shared by every test (and xdist worker) of the run, as the commands use
  theirs: a tiny step compiled by one test is loaded by the next."""
  from face2music_jax import jax_cache  # pylint: disable=import-outside-toplevel
  return jax_cache.enable(str(tmp_path_factory.getbasetemp().parent / 'jax_cache'))
