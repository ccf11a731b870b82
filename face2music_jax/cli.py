"""Shared set-up of the command-line entry points (run_train.py, run_eval.py, run_translate.py): flag parsing, quiet
library logs, the config and work directory from the flags, and one error policy with its exit codes:

  0  done
  1  a bad command line (absl's usage error), or an unexpected error (with its traceback)
  2  a known error (known_errors(), a --config.<field> that the config lacks): one line `Error: <message>`
  3  stopped by SIGTERM before the last step, after saving (preemption.EXIT_CODE): rerun to resume
"""

import functools
import logging as py_logging
import os
import re
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app
from absl import flags
from absl import logging

from face2music_jax import configs
from face2music_jax import preemption

# Errors whose message says what is wrong and what to do: a command reports them in one line, without a traceback.
# Named by module, so that a command imports only what it uses (translation never imports TensorFlow): an error
# can only have been raised by a module that was imported.
_KNOWN_ERRORS = (('face2music_jax.config_lib', 'ConfigError'), ('face2music_jax.checkpoint', 'CheckpointError'),
                 ('face2music_jax.evaluate', 'EvaluationError'), ('face2music_jax.translate', 'TranslationError'),
                 ('face2music_jax.translator', 'BundleError'), ('face2music_jax.data.exported', 'ExportError'),
                 ('face2music_jax.data.note_batches', 'DataError'), ('face2music_jax.faces.records', 'FaceDataError'),
                 ('face2music_jax.faces.embedding', 'NoFaceError'), ('face2music_jax.data.notes', 'SoundFontError'),
                 ('face2music_jax.data.notes', 'CorruptDatasetError'), ('face2music_jax.files', 'WriteError'),
                 ('face2music_jax.train', 'MemoryLimitError'), ('face2music_jax.workdir', 'WorkdirError'),
                 ('face2music_jax.faces.images', 'ImageError'), ('face2music_jax.evaluators.photos', 'PhotoFacesError'))


def known_errors() -> tuple[type[BaseException], ...]:
  """The known error types of the modules imported so far, and PermissionError."""
  return (PermissionError,) + tuple(
      getattr(sys.modules[module], name) for module, name in _KNOWN_ERRORS if module in sys.modules)


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


def resolve_config_names(argv: Sequence[str]) -> list[str]:
  """`--config=aux` (or `aux:tiny`, ...) -> the package's config file, from any directory; `--config=<path>` of a
  file that does not exist is one line naming it (exit code 2)."""
  out = []
  for arg in argv:
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
      file, _, size = value.partition(':')
      if file in configs.NAMES and not os.path.exists(file):
        arg = f'--config={configs.path(file)}' + (f':{size}' if size else '')
      elif not os.path.isfile(file):
        _error(f'--config={value}: no such config file; name one of {", ".join(configs.NAMES)} (e.g. --config=aux or '
               '--config=aux:tiny) or give the path of a config file.')
    out.append(arg)
  return out


def expand_home(argv: Sequence[str]) -> list[str]:
  """`--workdir=~/w` -> `--workdir=/home/me/w`: the shell expands `~` at the start of a word, not after `=`."""
  out = []
  for arg in argv:
    name, equals, value = arg.partition('=')
    out.append(
        f'{name}={os.path.expanduser(value)}' if arg.startswith('--') and equals and value.startswith('~') else arg)
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (app.run's flags_parser), where a --config.<field> override of a field that the config
  lacks is one line naming it (exit code 2) instead of ml_collections' traceback, config names are resolved
  (`resolve_config_names`) and `~` starts a path after `--flag=` too (`expand_home`)."""
  argv = resolve_config_names(expand_home(argv))
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # ml_collections' errors for a missing field, at whichever level.
    message = str(e)
    if "has no attribute 'get_config'" in message:
      config_arg = next((a for a in argv if a.startswith('--config=')), '--config')
      _error(f'{config_arg}: the config file defines no get_config() function, which returns the config (see '
             'face2music_jax/configs/aux.py).')
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
  """Decorates an absl `main`, which then compiles with JAX's persistent cache (`jax_cache`): a known_errors()
  exception prints `Error: <message>` to stderr and exits with code 2; a run stopped by SIGTERM prints
  `Stopped: <message>` and exits with code 3, also where library code raised its own error from the stop
  (`preemption.stop_behind`); any other exception propagates with its traceback."""

  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> None:
    from face2music_jax import jax_cache  # pylint: disable=import-outside-toplevel  (after --help)
    jax_cache.enable()
    try:
      main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      stop = preemption.stop_behind(e)
      if stop is not None:  # Also a stop that library code wrapped in its own error (preemption.stop_behind).
        if stop is not e:
          logging.info('The stop arrived inside library code, which raised %s: %s', type(e).__name__, e)
        logging.flush()
        print(f'Stopped: {stop}', file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_CODE)
      if not isinstance(e, known_errors()):
        raise
      _error(str(e))

  return wrapped


def run(main: Callable[[Sequence[str]], None], doc: str | None) -> None:
  """Runs an absl `main` as a command: `--help` prints `doc` and the flags of `main`'s module and exits 0 before
  anything heavy is imported; flags are parsed with `parse_flags`."""
  main_module = sys.modules['__main__']
  if doc and not main_module.__doc__:  # A console script's __main__ has no docstring: absl's usage shows it.
    main_module.__doc__ = doc
  if any(arg in ('--help', '-h', '--helpshort', '-?') for arg in sys.argv[1:]):
    # absl's short help lists the flags of the script that started Python (the `face2music` console script or a
    # run_<command>.py): none. The command's flags are defined in `main`'s module.
    print(f'{(doc or "").rstrip()}\n\nflags (--helpfull: also those of the libraries):\n'
          f'{flags.FLAGS.module_help(main.__module__).lstrip()}')
    sys.exit(0)
  # JAX reports at INFO that it found no TPU on every machine without one: a line users cannot act on.
  py_logging.getLogger('jax._src.xla_bridge').setLevel(py_logging.WARNING)
  app.run(main, flags_parser=parse_flags)


def config_and_workdir(config: ml_collections.ConfigDict | None,
                       workdir: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """The config and work directory of a command on a trained model, from its --config and --workdir flags.

  Without --workdir, it is the config's; without --config, the config is the one training wrote to
  `<workdir>/config.json`. Either is checked against the run's identity (`workdir.run_config`).
  """
  from face2music_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel  (after --help)
  if config is None and workdir is None:
    raise app.UsageError('Pass --config, --workdir or both.')
  workdir = workdir or config.workdir
  return workdir_lib.run_config(workdir, config), workdir
