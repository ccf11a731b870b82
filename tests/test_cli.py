"""The entry points' error policy: a known error is one line on stderr and exit code 2; others keep their traceback."""

import pytest

from face2music_jax import checkpoint
from face2music_jax import cli
from face2music_jax import config_lib
from face2music_jax.data import audio as audio_data


@pytest.mark.parametrize('error', [config_lib.ConfigError('config.audio.length = 8000 is invalid'),
                                   checkpoint.CheckpointError('No GAN checkpoint in /w/checkpoints'),
                                   audio_data.DataError('corrupt.tfrecord is corrupt'),
                                   PermissionError('The work directory /w is not writable')])
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
