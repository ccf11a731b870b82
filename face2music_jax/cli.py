"""Shared set-up of the command-line entry points (run_train.py, run_eval.py, run_translate.py): quiet library
logs, the config and work directory from the flags, and one error policy."""

import functools
import logging as py_logging
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app
from absl import logging

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import evaluate
from face2music_jax import translate
from face2music_jax.data import audio as audio_data
from face2music_jax.data import face_embedding
from face2music_jax.data import faces as face_data
from face2music_jax.data import notes as notes_data

# Errors whose message says what is wrong and what to do: a command reports them in one line, without a traceback.
KNOWN_ERRORS = (config_lib.ConfigError, checkpoint.CheckpointError, evaluate.EvaluationError,
                translate.TranslationError, PermissionError, audio_data.DataError, face_data.FaceDataError,
                face_embedding.NoFaceError, notes_data.SoundFontError)
# The exit code of a known error (absl exits with 1 on a bad command line, Python with 1 on any other error).
KNOWN_ERROR_EXIT_CODE = 2


class _QuietLibraries(py_logging.Filter):
  """Keeps Orbax's and TFDS's per-file INFO lines out of the progress log (their warnings still show)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/'))


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())


def reports_known_errors(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
  """Decorates an absl `main`: a KNOWN_ERRORS exception prints `Error: <message>` to stderr and exits with code 2;
  any other exception propagates with its traceback."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> None:
    try:
      main(argv)
    except KNOWN_ERRORS as e:
      logging.flush()  # The log lines before the error, then the error.
      print(f'Error: {e}', file=sys.stderr, flush=True)
      sys.exit(KNOWN_ERROR_EXIT_CODE)

  return wrapped


def config_and_workdir(config: ml_collections.ConfigDict | None, workdir: str | None
                       ) -> tuple[ml_collections.ConfigDict, str]:
  """The config and work directory of a command on a trained model, from its --config and --workdir flags.

  Without --workdir, it is the config's; without --config, the config is the one training wrote to
  `<workdir>/config.json`.
  """
  if config is None and workdir is None:
    raise app.UsageError('Pass --config, --workdir or both.')
  workdir = workdir or config.workdir
  return config_lib.load_config(workdir, config), workdir
