"""Files that commands write: checking a directory before any work, and writes that a reader never sees half done."""

import errno
import json
import os
import tempfile
from typing import Any

import jax
from jax.experimental import multihost_utils


def check_writable(directory: str, what: str) -> None:
  """Fails at once, with a PermissionError naming `directory`, if files cannot be created there.

  A directory that does not exist yet is checked through its nearest existing ancestor; nothing is created, so a
  command that fails later has written nothing.

  Args:
    directory: the directory that a command will write to.
    what: what it is, for the message (e.g. 'work directory').
  """
  existing = os.path.abspath(directory)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    if not os.path.isdir(existing):
      raise NotADirectoryError(errno.ENOTDIR, 'Not a directory', existing)
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise PermissionError(f'The {what} {directory} is not writable: {e}') from e


def write_text(path: str, text: str) -> None:
  """Writes `path` atomically: the text goes to `<path>.tmp`, which then replaces `path` (a rename), so that a
  process killed meanwhile leaves the old file or the new one, never a part. Creates the parent directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically (`write_text`), on process 0; every process waits for it."""
  if jax.process_index() == 0:
    write_text(path, json.dumps(obj, indent=2))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'write {path}')
