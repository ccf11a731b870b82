"""Shared set-up of the command-line entry points."""

import logging as py_logging

from absl import logging


class _QuietLibraries(py_logging.Filter):
  """Keeps Orbax's and TFDS's per-file INFO lines out of the progress log (their warnings still show)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/'))


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())
