"""Files that commands write: checking a directory before any work, writes that a reader never sees half done, and
one clear error for every write that fails (a full disk, a directory that is not writable)."""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

# The key under which `write_json(..., checksum=True)` stores the SHA-256 of the rest of the object.
CHECKSUM_KEY = 'sha256'


class WriteError(RuntimeError):
  """A file could not be written; the message names it and the likely cause (a full disk, or no permission)."""


class CorruptFileError(ValueError):
  """A file that a command wrote earlier does not read back as it was written; the message names it."""


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


@contextlib.contextmanager
def writing(path: str, errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
  """Turns a failed write of `path` into one WriteError naming it and the likely cause.

  Args:
    path: the file (or directory) being written.
    errors: exception types besides OSError that the writer raises for a failed write (e.g. TensorFlow's).
  """
  try:
    yield
  except (OSError, *errors) as e:
    raise WriteError(f'Could not write {path} (is the disk full, or the directory not writable?): '
                     f'{type(e).__name__}: {e}') from e


def write_bytes(path: str, data: bytes) -> None:
  """Writes `path` atomically: the data go to `<path>.tmp`, which then replaces `path` (a rename), so that a
  process killed meanwhile leaves the old file or the new one, never a part. Creates the parent directory.

  Raises:
    WriteError: naming `path`, if it cannot be written (the temporary file is removed; `path` is unchanged).
  """
  tmp = f'{path}.tmp'
  with writing(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
      with open(tmp, 'wb') as f:
        f.write(data)
      os.replace(tmp, path)
    except OSError:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (`write_bytes`)."""
  write_bytes(path, text.encode())


def append_text(path: str, text: str) -> None:
  """Appends `text` to `path`; WriteError naming it if that fails (a reader must accept a partial last line)."""
  with writing(path), open(path, 'a') as f:
    f.write(text)


def _checksum(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def write_json(path: str, obj: Any, checksum: bool = False) -> None:
  """Writes `obj` as indented JSON, atomically (`write_text`), on process 0; every process waits for it.

  Args:
    path: the file.
    obj: a JSON-serialisable object; a dict if `checksum`.
    checksum: store the SHA-256 of `obj` under CHECKSUM_KEY, which `read_json` verifies.
  """
  # JAX here only: the command lines import this module before their flags are read (--help answers at once).
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  if checksum:
    obj = {**obj, CHECKSUM_KEY: _checksum(obj)}
  if jax.process_index() == 0:
    write_text(path, json.dumps(obj, indent=2))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'write {path}')


def read_json(path: str, checksum: bool = False) -> Any:
  """The object of a JSON file that `write_json` wrote, its checksum (if it has one) verified and removed.

  Args:
    path: the file.
    checksum: it must carry a checksum (it was written with `checksum=True`): one that lacks it, or is not an
      object, is corrupt rather than accepted unverified.

  Raises:
    CorruptFileError: naming `path`, if it is not valid JSON, lacks a checksum it must have, or its contents differ
      from their checksum.
  """
  try:
    with open(path, 'rb') as f:
      obj = json.loads(f.read())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptFileError(f'{path} is not valid JSON: {e}') from e
  if checksum and not (isinstance(obj, dict) and CHECKSUM_KEY in obj):
    raise CorruptFileError(f'{path} has no checksum ({CHECKSUM_KEY!r}), which it was written with: it cannot be '
                           'verified.')
  if isinstance(obj, dict) and CHECKSUM_KEY in obj:
    stored = obj.pop(CHECKSUM_KEY)
    if stored != _checksum(obj):
      raise CorruptFileError(f'{path} does not match its checksum: its contents changed after it was written.')
  return obj


def set_aside(path: str, reason: str, label: str = 'corrupt') -> str:
  """Renames a corrupt (or otherwise unusable) file or directory to `<path>.<label>-<reason>`, never deleting it, and
  returns the new name.

  A name already taken gets a number: `<path>.corrupt-<reason>-2`, ...
  """
  target = f'{path}.{label}-{reason}'
  number = 1
  while os.path.exists(target):
    number += 1
    target = f'{path}.{label}-{reason}-{number}'
  os.rename(path, target)
  return target


def _failed_write(where: str, error: OSError) -> WriteError:
  name = getattr(error, 'filename', None) or where
  return WriteError(f'Could not write {name} (is the disk full, or the directory not writable?): '
                    f'{type(error).__name__}: {error}')


@contextlib.contextmanager
def building(out_dir: str) -> Iterator[str]:
  """All of a directory of outputs, or none of it: yields `<out_dir>.incomplete` to write into, which replaces
  `out_dir` when the block ends; a block that fails (a full disk, Ctrl-C, any error) leaves `out_dir` as it was
  and no `.incomplete` behind.

  Raises:
    WriteError: naming the file, for an OSError in the block (a full disk, ...).
  """
  build = f'{out_dir}.incomplete'
  shutil.rmtree(build, ignore_errors=True)
  try:
    with writing(build):
      os.makedirs(build)
    try:
      yield build
    except OSError as e:
      raise _failed_write(build, e) from e
    with writing(out_dir):
      if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
      os.replace(build, out_dir)
  finally:
    shutil.rmtree(build, ignore_errors=True)


@contextlib.contextmanager
def staged(output_dir: str) -> Iterator[Callable[[str], str]]:
  """All of a command's files in a shared directory, or none: yields `stage(name)`, the path to write the output
  `name` to (in a hidden directory of `output_dir`); when the block ends, each staged file replaces
  `<output_dir>/<name>` (renames, after every file is written), and the hidden directory goes. A block that fails
  (a full disk, Ctrl-C, any error) leaves `output_dir` as it was.

  Raises:
    WriteError: naming the file, for an OSError in the block (a full disk, ...).
  """
  with writing(output_dir):
    os.makedirs(output_dir, exist_ok=True)
  stage_dir = tempfile.mkdtemp(prefix='.incomplete-', dir=output_dir)
  names = []

  def stage(name: str) -> str:
    names.append(name)
    return os.path.join(stage_dir, name)

  try:
    try:
      yield stage
    except OSError as e:
      raise _failed_write(stage_dir, e) from e
    for name in names:
      with writing(os.path.join(output_dir, name)):
        os.replace(os.path.join(stage_dir, name), os.path.join(output_dir, name))
  finally:
    shutil.rmtree(stage_dir, ignore_errors=True)
