"""Shared fixtures: the tiny embedded datasets are built once per test run, shared by pytest-xdist workers.

The tests compile with most of XLA's optimizations off (JAX_DISABLE_MOST_OPTIMIZATIONS=1) and without the CPU
backend's fusion emitters (XLA_FLAGS), also for the commands they run, through the environment, unless the
environment says otherwise: the tiny aux step compiles in 3.2 s here (9.1 s with the fusion emitters, about 16 s
with every optimisation) and runs for a few steps only. HLO-level passes still run; the results agree with the
optimized build to rounding. The benchmarks measure the optimized build (`python -m benchmarks.run`, outside the tests).
"""

import os
import pathlib

os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')  # Before JAX is imported (by the test modules).
# XLA's CPU backend without its fusion emitters (the older loop emitters): the tiny aux step compiles in about a
# third of the time (9.1 s -> 3.2 s here, and jit(Models.init) 4.6 s -> 2.3 s); what it computes agrees to rounding.
if 'xla_cpu_use_fusion_emitters' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_use_fusion_emitters=false').strip()

# pylint: disable=wrong-import-position
import filelock
import pytest

# The package (JAX) is imported by the fixtures that use it, not here: pytest's own process (xdist's controller)
# then starts the workers without 5 s of imports first.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """The slow tests first (stable: in collection order among themselves): xdist hands out tests in this order, so the
  two workers end on short tests instead of one of them finishing a minute-long one while the other waits."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def _run_root(tmp_path_factory) -> pathlib.Path:
  """The directory of this test run, shared by its xdist workers (each has its own basetemp below it); not shared
  with other runs, whose artefacts may be of other code."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory) -> str:
  """A data dir holding the tiny config's SoundFont notes and default faces."""
  root = _run_root(tmp_path_factory)
  data_dir = str(root / 'tiny_data')
  with filelock.FileLock(str(root / 'tiny_data.lock')):
    from face2music_jax import stages  # pylint: disable=import-outside-toplevel
    from tests import helpers  # pylint: disable=import-outside-toplevel
    config = helpers.tiny_config()
    config.data_dir = data_dir
    stages.ensure_data(config)
  return data_dir


@pytest.fixture(scope='session')
def tiny_exported(tiny_data_dir, tmp_path_factory) -> str:
  """The tiny data exported to one .npz (data/exported.py; the same arrays): the commands that the tests run read
  it with `--config.data.exported=`, so that they never import TensorFlow (5-10 s each here), unless they test
  the TFDS data themselves."""
  from face2music_jax.data import exported  # pylint: disable=import-outside-toplevel
  from tests import helpers  # pylint: disable=import-outside-toplevel
  root = _run_root(tmp_path_factory)
  path = str(root / 'tiny_data.npz')
  with filelock.FileLock(str(root / 'tiny_data_npz.lock')):
    if not os.path.exists(path):
      config = helpers.tiny_config()
      config.data_dir = tiny_data_dir
      exported.export(config, path)
  return path


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path):
  """The tiny aux config on the shared tiny data, with its own workdir."""
  from tests import helpers  # pylint: disable=import-outside-toplevel
  config = helpers.tiny_config('aux')
  config.data_dir = tiny_data_dir
  config.workdir = os.path.join(str(tmp_path), 'workdir')
  return config


@pytest.fixture(scope='session')
def trained_tiny_workdir(tiny_data_dir, tmp_path_factory) -> str:
  """One tiny aux model with the product's generator (harmonic) trained for its 4 steps, shared by every test (and
  every xdist worker) that only reads a trained model: translation, bundles, the photo evaluator."""
  from face2music_jax import train  # pylint: disable=import-outside-toplevel
  from tests import helpers  # pylint: disable=import-outside-toplevel
  root = _run_root(tmp_path_factory)
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
  """JAX's persistent compilation cache, shared by every test, xdist worker and command the tests run (through
  the environment), as the commands use theirs: a tiny step compiled by one test is loaded by the next."""
  from face2music_jax import jax_cache  # pylint: disable=import-outside-toplevel
  if os.environ.get(jax_cache.ENV) == '0':  # Turned off for the run.
    return None
  directory = str(_run_root(tmp_path_factory) / 'jax_cache')
  os.environ[jax_cache.ENV] = directory
  return jax_cache.enable(directory)
