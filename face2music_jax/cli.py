"""Shared set-up of the command-line entry points (run_train.py, run_eval.py, run_translate.py): flag parsing, quiet
library logs, the config and work directory from the flags, and one error policy with its exit codes:

  0  done
  1  a bad command line (absl's usage error), or an unexpected error (with its traceback)
  2  a known error (KNOWN_ERRORS, a --config.<field> that the config lacks): one line `Error: <message>`
  3  stopped by SIGTERM before the last step, after saving (preemption.EXIT_CODE): rerun to resume
"""

import functools
import logging as py_logging
import re
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app
from absl import logging

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import evaluate
from face2music_jax import files
from face2music_jax import preemption
from face2music_jax import translate
from face2music_jax import workdir
from face2music_jax.data import audio as audio_data
from face2music_jax.data import face_embedding
from face2music_jax.data import face_records
from face2music_jax.data import notes as notes_data

# Errors whose message says what is wrong and what to do: a command reports them in one line, without a traceback.
KNOWN_ERRORS = (config_lib.ConfigError, checkpoint.CheckpointError, evaluate.EvaluationError,
                translate.TranslationError, PermissionError, audio_data.DataError, face_records.FaceDataError,
                face_embedding.NoFaceError, notes_data.SoundFontError, files.WriteError, workdir.WorkdirError)
# The exit code of a known error (absl exits with 1 on a bad command line, Python with 1 on any other error).
KNOWN_ERROR_EXIT_CODE = 2


class _QuietLibraries(py_logging.Filter):
  """Keeps Orbax's and TFDS's per-file INFO lines out of the progress log (their warnings still show)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(part in record.pathname
                                                           for part in ('/orbax/', '/tensorflow_datasets/'))


def _error(message: str) -> None:
  """Reports a known error: the log lines before it, then one line on stderr; exits with KNOWN_ERROR_EXIT_CODE."""
  logging.flush()
  print(f'Error: {message}', file=sys.stderr, flush=True)
  sys.exit(KNOWN_ERROR_EXIT_CODE)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (app.run's flags_parser), where a --config.<field> override of a field that the config
  lacks is one line naming it (exit code 2) instead of ml_collections' traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # ml_collections' errors for a missing field, at whichever level.
    message = str(e)
    suggestion = re.search(r'Did you mean \W*"(\w+)\W* instead of \W*"(\w+)', message)
    unknown = suggestion.group(2) if suggestion else re.search(r"(\w+)", message).group(1)
    for arg in argv[1:]:
      parts = arg.split('=', 1)[0].removeprefix('--config.').split('.')
      if arg.startswith('--config.') and unknown in parts:
        parents = parts[:parts.index(unknown)]
        field = '.'.join([*parents, unknown])
        hint = f' (did you mean config.{".".join([*parents, suggestion.group(1)])}?)' if suggestion else ''
        _error(f'{arg}: the config has no field {field}{hint}.')
    _error(f'Unknown config field: {" ".join(message.split())}')


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())


def reports_known_errors(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
  """Decorates an absl `main`: a KNOWN_ERRORS exception prints `Error: <message>` to stderr and exits with code 2;
  a run stopped by SIGTERM prints `Stopped: <message>` and exits with code 3; any other exception propagates with
  its traceback."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> None:
    try:
      main(argv)
    except KNOWN_ERRORS as e:
      _error(str(e))
    except preemption.Preempted as e:
      logging.flush()
      print(f'Stopped: {e}', file=sys.stderr, flush=True)
      sys.exit(preemption.EXIT_CODE)

  return wrapped


def config_and_workdir(config: ml_collections.ConfigDict | None,
                       workdir: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """The config and work directory of a command on a trained model, from its --config and --workdir flags.

  Without --workdir, it is the config's; without --config, the config is the one training wrote to
  `<workdir>/config.json`.
  """
  if config is None and workdir is None:
    raise app.UsageError('Pass --config, --workdir or both.')
  workdir = workdir or config.workdir
  return config_lib.load_config(workdir, config), workdir
