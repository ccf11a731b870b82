"""The entry points' error policy: a known error is one line on stderr and exit code 2, a run stopped by SIGTERM
exits with code 3; others keep their traceback."""

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from face2music_jax import checkpoint
from face2music_jax import cli
from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import preemption
from face2music_jax import workdir
from face2music_jax.data import note_batches


@pytest.mark.parametrize('error', [
    config_lib.ConfigError('config.audio.length = 8000 is invalid'),
    checkpoint.CheckpointError('No GAN checkpoint in /w/checkpoints'),
    note_batches.DataError('corrupt.tfrecord is corrupt'),
    PermissionError('The work directory /w is not writable'),
    files.WriteError('Could not write /w/samples/a.wav (is the disk full'),
    workdir.WorkdirError('The work directory /w is in use by process 7')
])
def test_a_known_error_prints_one_line_and_exits_with_code_2(error, capsys):

  @cli.reports_known_errors
  def main(argv):
    del argv
    raise error

  with pytest.raises(SystemExit) as exit_info:
    main(['run_x.py'])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == f'Error: {error}\n'


def test_another_error_keeps_its_traceback():

  @cli.reports_known_errors
  def main(argv):
    del argv
    raise ZeroDivisionError('a bug')

  with pytest.raises(ZeroDivisionError, match='a bug'):
    main(['run_x.py'])


def test_a_run_stopped_by_sigterm_exits_with_its_own_code(capsys):

  @cli.reports_known_errors
  def main(argv):
    del argv
    raise preemption.Preempted('Stopped at step 3 after SIGTERM')

  with pytest.raises(SystemExit) as exit_info:
    main(['run_x.py'])
  assert exit_info.value.code == preemption.EXIT_CODE == 3
  assert capsys.readouterr().err == 'Stopped: Stopped at step 3 after SIGTERM\n'


def _wrapped_by_an_extension_import():
  """What pybind11 raises when the SIGTERM handler's exception leaves a C extension's module initialisation
  (CI: the stop landed while evaluation imported TensorFlow)."""
  try:
    raise preemption.Preempted('SIGTERM received before training started: stopped')
  except preemption.Preempted as stop:
    raise ImportError('initialization failed') from stop


def _raised_while_handling_the_stop():
  try:
    raise preemption.Preempted('SIGTERM received before training started: stopped')
  except preemption.Preempted:
    raise RuntimeError('a library cleaning up') from None  # Its __context__ is still the stop.


@pytest.mark.parametrize('library', [_wrapped_by_an_extension_import, _raised_while_handling_the_stop])
def test_a_stop_that_library_code_wrapped_in_its_own_error_still_exits_as_stopped(library, capsys):

  @cli.reports_known_errors
  def main(argv):
    del argv
    library()

  with pytest.raises(SystemExit) as exit_info:
    main(['run_x.py'])
  assert exit_info.value.code == preemption.EXIT_CODE
  assert capsys.readouterr().err == 'Stopped: SIGTERM received before training started: stopped\n'


def test_a_home_directory_after_a_flags_equals_sign_is_expanded(monkeypatch):
  monkeypatch.setenv('HOME', '/home/me')
  assert cli.expand_home(
      ['face2music', '--workdir=~/w', '--out', '~/b', '--melody=C4 ~', '--x=a~',
       'p~.jpg']) == ['face2music', '--workdir=/home/me/w', '--out', '~/b', '--melody=C4 ~', '--x=a~', 'p~.jpg']


@pytest.mark.slow
def test_an_unknown_config_field_is_one_line_naming_it():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([
      sys.executable, 'run_eval.py', '--config=configs/aux.py:tiny', '--workdir=/nonexistent',
      '--config.train.g_lrr=1e-3'
  ], cwd=root, capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      'Error: --config.train.g_lrr=1e-3: the config has no field train.g_lrr (did you mean config.train.g_lr?).')


@pytest.mark.slow
def test_an_operators_everyday_mistakes_are_one_line_each(tmp_path):
  """A mistyped config path, a config file without get_config(), a file where the data (cache) directory goes."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  (tmp_path / 'mine.py').write_text('import ml_collections\n\n\ndef config():\n  return ml_collections.ConfigDict()\n')
  (tmp_path / 'cache').write_text('a file, not a directory')
  env = dict(os.environ, JAX_PLATFORMS='cpu', FACE2MUSIC_CACHE=str(tmp_path / 'cache'))
  expected = {
      '--config=configs/auxx.py': 'Error: --config=configs/auxx.py: no such config file; name one of',
      f'--config={tmp_path}/mine.py': f'Error: --config={tmp_path}/mine.py: the config file defines no get_config()',
      '--config=aux:tiny': f'Error: The data directory (config.data_dir; $FACE2MUSIC_CACHE/data by default) {tmp_path}/'
                           'cache/data is not writable',
  }
  for arg, line in expected.items():
    done = subprocess.run([sys.executable, 'run_train.py', arg, f'--workdir={tmp_path}/workdir'], cwd=root,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(line), done.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'workdir')
  # export_data: an --out that cannot be written fails before the data are built (there is no data directory).
  (tmp_path / 'blocker').write_text('a file, not a directory')
  done = subprocess.run([
      sys.executable, '-m', 'face2music_jax.apps.export_data', '--config=aux:tiny',
      f'--config.data_dir={tmp_path}/data', f'--out={tmp_path}/blocker/data.npz'
  ], cwd=root, capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1].startswith(
      f'Error: The directory of --out {tmp_path}/blocker is not writable'), done.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'data')


@pytest.mark.slow
def test_every_commands_help_lists_its_flags(tmp_path):
  """`face2music <command> --help`, as a user types it: the command's own flags, each with its help line."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  console = shutil.which('face2music')
  assert console, 'the face2music command is not installed (bash scripts/install.sh)'
  apps = sorted(glob.glob(os.path.join(root, 'face2music_jax', 'apps', '[a-z]*.py')))
  assert len(apps) >= 7
  for path in apps:
    command = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
      defined = re.findall(r"DEFINE_\w+\(\s*'(\w+)'", f.read())
    assert defined, path
    done = subprocess.run([console, command, '--help'], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = set(re.findall(r'^  --(?:\[no\])?(\w+):', done.stdout, re.MULTILINE))
    assert listed == set(defined), (command, done.stdout)
