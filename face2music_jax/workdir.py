"""Guards of a training work directory: one command at a time (a lock) and one run per directory (its identity).

`locked(workdir)` holds `<workdir>/lock` while training runs: an exclusive `flock` on the file, which the kernel
releases when its process ends however it ends, so a lock left by a killed process is stale by construction and
the next command takes it over (saying so); the file names the holder's PID and host for the message of a second
command, which fails at once.

`accept_run(config, workdir)` compares the config with the run that the work directory holds before anything is
written: `<workdir>/run.json` records every field that defines the run (all but RESUMABLE_FIELDS and the sections
of RESUMABLE_SECTIONS, which may change when a run is resumed) and their fingerprint. A different config is one
error naming the fields that differ; a work directory written before run.json existed is judged by its
config.json.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax.faces import embedding as face_embedding

LOCK_FILE = 'lock'
EVAL_LOCK_FILE = 'eval.lock'
IDENTITY_FILE = 'run.json'
# Fields that may change when a run is resumed: how long it trains, how often it logs, samples and saves, where
# its files are (the data are a function of the other fields) and how it is evaluated.
RESUMABLE_FIELDS = ('train.num_steps', 'train.log_every', 'train.checkpoint_every', 'train.sample_every',
                    'train.keep_checkpoints', 'workdir', 'data_dir', 'data.tfds_data_dir')
RESUMABLE_SECTIONS = ('eval',)
# The artefacts of the prerequisite stages in a work directory (stages.py): they depend on the config's fields
# outside train.*, and statistics.json on train.metric_pairs and train.metric_features too (it records which pairs
# and which space; stages.ensure_statistics sets one of another kind aside and computes it again).
STAGE_ARTEFACTS = ('audio_embedding', 'classifiers', 'statistics.json')


class WorkdirError(RuntimeError):
  """The work directory is in use by another command, or holds a run of another config; the message says which."""


def _holder(path: str) -> str:
  """Who holds (or held) a lock file, in words, from its contents."""
  try:
    with open(path) as f:
      holder = json.load(f)
    return f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
  except (OSError, ValueError, KeyError, TypeError):
    return 'a process that has not written its PID yet'


@contextlib.contextmanager
def locked(workdir: str, name: str = LOCK_FILE) -> Iterator[None]:
  """Holds the lock of `workdir` (created if need be) while the block runs: `name`, the lock of training, or
  EVAL_LOCK_FILE, that of evaluation (which may run while training does, but not twice at once).

  Raises:
    WorkdirError: another live process holds it; the message names its PID and host.
  """
  path = os.path.join(workdir, name)
  os.makedirs(workdir, exist_ok=True)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirError(f'The work directory {workdir} is in use by {_holder(path)}, whose lock is {path}: wait for '
                         'that command to end (or stop it), or use another --workdir.') from None
    # The holder before us may have deleted the file while we opened it: a lock on a deleted file guards nothing.
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  try:
    if os.fstat(fd).st_size:
      logging.warning('Cleared the stale lock of %s, which ended without releasing it.', _holder(path))
    holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.strftime('%Y-%m-%d %H:%M:%S')}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    yield
  finally:
    # Deleted while still held, so that no other process can lock this file after we let go of it.
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)


def _resumable(field: str) -> bool:
  return field in RESUMABLE_FIELDS or field.split('.')[0] in RESUMABLE_SECTIONS


def run_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields that define a run, flattened ('train.g_lr' -> 1e-4), with JSON values (lists for tuples); for the
  face network, 'data.face_embedder' also holds the fingerprint of its weights file."""
  flat = {}

  def walk(node: dict[str, Any], prefix: str) -> None:
    for key, value in node.items():
      name = f'{prefix}{key}'
      if _resumable(name):
        continue
      if isinstance(value, dict):
        walk(value, f'{name}.')
      else:
        flat[name] = value

  walk(json.loads(config.to_json_best_effort()), '')
  if config.data.face_embedding == 'network':  # The weights themselves, not only their path, define the run.
    flat['data.face_embedder'] = face_embedding.embedder_tag(config)
  return flat


def fingerprint(fields: dict[str, Any]) -> str:
  """SHA-256 of the fields that define a run."""
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _differences(here: dict[str, Any], there: dict[str, Any]) -> list[str]:
  """'config.<field> = <here> here, <there> in the work directory' for every field that differs."""
  for old, new in config_lib.RENAMED_FIELDS.items():  # Records of older versions name moved fields by old names.
    if old in there:
      there[new] = there.pop(old)
  for field, value in config_lib.ADDED_FIELDS.items():  # What runs of older versions had.
    if not _resumable(field):
      there.setdefault(field, list(value) if isinstance(value, tuple) else value)
  absent = '(absent)'
  return [
      f'config.{k} = {here.get(k, absent)!r} here, {there.get(k, absent)!r} in the work directory'
      for k in sorted(here.keys() | there.keys())
      if here.get(k, absent) != there.get(k, absent)
  ]


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the complete checkpoints in `workdir/checkpoints`, sorted (set-aside and partial ones excluded)."""
  directory = os.path.join(workdir, 'checkpoints')
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(n) for n in names if n.isdigit())


def identity(workdir: str) -> dict[str, Any] | None:
  """The identity record of the run in `workdir` (`accept_run`), verified; None if it has none (no run yet, or a
  work directory of a version older than run.json).

  Raises:
    WorkdirError: run.json is unreadable, not a record, or differs from its checksum.
  """
  path = os.path.join(workdir, IDENTITY_FILE)
  if not os.path.exists(path):
    return None
  try:
    record = files.read_json(path, checksum=True)
    if not isinstance(record['fields'], dict) or not isinstance(record['verified_from'], int):
      raise TypeError('fields or verified_from of the wrong type')
  except (OSError, files.CorruptFileError, KeyError, TypeError) as e:
    raise WorkdirError(f'{path}, the identity of the run in {workdir}, is corrupt ({e}); move it away to accept '
                       'this config as the run of this directory.') from e
  return record


def verified_from(workdir: str) -> int | None:
  """The first checkpoint step of the run in `workdir` that must carry checksums; None if the work directory has no
  identity record (checkpoints of versions before checksums, which cannot be verified)."""
  record = identity(workdir)
  return None if record is None else record['verified_from']


def run_config(workdir: str, config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The config of the trained run in `workdir`, for the commands that read its model (evaluation, translation,
  export): `config` if given, else the run's `config.json`, checked against the run's identity (run.json).

  A config.json edited after training (e.g. another sample rate) would make every later command use a config that
  the model was not trained with; a --config of another run likewise.

  Raises:
    config_lib.ConfigError: no config given and config.json is missing, unreadable or not a config.
    WorkdirError: the config differs from the run's identity in a field that defines the run (each is named), or
      run.json is corrupt.
  """
  source = 'The --config given' if config is not None else os.path.join(workdir, 'config.json')
  config = config_lib.load_config(workdir, config)
  record = identity(workdir)
  if record is not None:
    differences = _differences(run_fields(config), dict(record['fields']))
    if differences:
      raise WorkdirError(f'{source} is not the config of the run in {workdir} (its identity, '
                         f'{os.path.join(workdir, IDENTITY_FILE)}, says otherwise): {"; ".join(differences)}. '
                         'Pass the config the model was trained with (or restore config.json: it must not be edited).')
  return config


def accept_run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Accepts `config` for `workdir` if it is the config of the run there (or there is none), before anything of the
  run is written; records the run's identity in a new work directory. Every process must call this.

  Returns:
    The identity record: {'fingerprint', 'fields', 'verified_from'}: 'verified_from' is the first checkpoint step
    that must carry checksums (checkpoints of older versions, already there when the record was made, need not).

  A run's identity binds the directory once it holds a checkpoint: before that (e.g. a run that failed before its
  first checkpoint, with a batch that did not fit), another config takes the directory over, with a warning, and
  the stage artefacts are set aside (`<name>.stale-config`) unless only `train.*` fields differ.

  Raises:
    WorkdirError: the work directory holds checkpoints of a run of another config; the message names every
      differing field.
    config_lib.ConfigError: an older work directory's config.json is unreadable.
  """
  path = os.path.join(workdir, IDENTITY_FILE)
  fields = run_fields(config)
  record = identity(workdir)
  if record is not None:
    there, where = record['fields'], path
  elif os.path.exists(os.path.join(workdir, 'config.json')):  # Written before run.json existed.
    there = run_fields(config_lib.load_config(workdir))
    where = os.path.join(workdir, 'config.json')
  else:
    there, where = fields, None
  differences = _differences(fields, dict(there))
  steps = checkpoint_steps(workdir)
  if differences and steps:
    raise WorkdirError(f'The work directory {workdir} holds a run of another config ({where}): '
                       f'{"; ".join(differences)}. Use another --workdir, or the config of that run (only '
                       f'{", ".join(RESUMABLE_FIELDS)} and {", ".join(f"{s}.*" for s in RESUMABLE_SECTIONS)} may '
                       'change when a run is resumed).')
  if jax.process_count() > 1:  # Every process has read what was there before process 0 writes.
    multihost_utils.sync_global_devices(f'read {path}')
  if differences:  # No checkpoint yet: nothing binds the directory to the earlier config (e.g. a run that failed).
    logging.warning(
        '%s was recorded for another config, but holds no checkpoint: it is now the run of this config '
        '(%s).', workdir, '; '.join(differences))
    if any(not d.startswith('config.train.') for d in differences) and jax.process_index() == 0:
      for name in STAGE_ARTEFACTS:  # They may depend on the fields that changed: the stages run again.
        if os.path.exists(os.path.join(workdir, name)):
          moved = files.set_aside(os.path.join(workdir, name), 'config', label='stale')
          logging.warning('Set the stage artefact of the earlier config aside as %s.', moved)
    record = None
  if record is None:
    if steps and where is None:
      logging.warning('%s holds checkpoints but no config.json or %s: taking them to be of this config.', workdir,
                      IDENTITY_FILE)
    record = {'fingerprint': fingerprint(fields), 'fields': fields, 'verified_from': steps[-1] + 1 if steps else 0}
    files.write_json(path, record, checksum=True)
  return record
