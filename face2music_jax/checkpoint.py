"""Checkpoints with Orbax: the GAN's periodic checkpoints and the prerequisite stages' frozen artefacts, each with a
checksum of every array, verified when it is read.

Orbax writes each checkpoint into a temporary directory (`<step>.orbax-checkpoint-tmp`) and renames it to `<step>`
only after every file is written, so a process killed during a save (even during the final rename: rename is
atomic) leaves no checkpoint that `latest_step()` would pick up; the manager deletes such leftovers when it is
created. Saves are asynchronous: `Saver` reports a failed write (e.g. a full disk) naming its step. `restore_entry`
reads one entry of a checkpoint alone (evaluation and translation read the generator's).

What was written is not always what is read back (a flipped bit on a disk, a file truncated or deleted by hand),
and Orbax reads such a checkpoint without a word or fails deep in its storage layer. So every save stores a CRC32
of each array in the checkpoint's own metadata (`_CHECKPOINT_METADATA`, written before the final rename, so a
checkpoint and its checksums appear together), and every restore compares them: `restore_latest` sets a
checkpoint that fails aside as `<step>.corrupt-<reason>` (never deleting it) and falls back to the newest one that
verifies.
"""

import dataclasses
import os
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from face2music_jax import files
from face2music_jax import preemption


class CheckpointError(RuntimeError):
  """A checkpoint is missing, unreadable, cannot be written or does not match the model of the current config."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint does not load, or its arrays differ from the checksums written with it.

  Attributes:
    reason: a word for the name it is set aside under: 'checksum', 'unreadable' or 'unchecksummed'.
  """

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason


def manager(directory: str, keep: int) -> ocp.CheckpointManager:
  """A manager of `directory` keeping the last `keep` checkpoints; removes temporary dirs of interrupted saves."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def reader(directory: str) -> ocp.CheckpointManager:
  """A manager that only reads the checkpoints of `directory`, for `restore_entry`.

  It creates and deletes nothing: a training run may be saving into the directory meanwhile, and the temporary
  directory of its save in flight is not a leftover.
  """
  # Not Orbax's read_only option, which logs warnings about itself at every use; this manager never saves.
  options = ocp.CheckpointManagerOptions(create=False)
  # The pytree handler reads the saved tree's metadata, which `restore_entry` checks before reading any array.
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=ocp.PyTreeCheckpointHandler())


def _another_config(where: str, problem: Any) -> CheckpointError:
  return CheckpointError(f'The checkpoint {where} does not fit the model of this config (was it written with '
                         f'another config? Use another --workdir): {problem}')


def _name(path: tuple[Any, ...]) -> str:
  """A pytree path as a name that does not depend on the container types: 'g/params/project/kernel'.

  Orbax stores dataclasses and named tuples as dicts and tuples as lists, so a restored tree's paths differ in
  type from the saved tree's, but not in name.
  """
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _host(x: Any) -> np.ndarray:
  """An array's values on this host: a replicated jax.Array's first local copy, or a numpy array."""
  return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def checksums(tree: Any) -> dict[str, str]:
  """'<dtype><shape>:<CRC32>' of every array of `tree` (jax.Arrays replicated over the devices, or numpy arrays),
  by name ('g/params/project/kernel')."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host(leaf)
    crc = zlib.crc32(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    out[_name(path)] = f'{value.dtype}{list(value.shape)}:{crc:08x}'
  return out


def verify(stored: dict[str, str], tree: Any, where: str, prefix: str = '') -> None:
  """Compares the arrays of `tree` with the checksums stored with them.

  Args:
    stored: `checksums` of the tree that was saved.
    tree: what was read back: the whole tree, or its entry `prefix`.
    where: the checkpoint, for the message.
    prefix: the name of the entry that `tree` is ('g'), or '' for the whole tree.

  Raises:
    CorruptCheckpointError: an array differs from its checksum, or has none.
  """
  got = checksums(tree)
  differ = [name for name, value in got.items() if stored.get(f'{prefix}/{name}' if prefix else name) != value]
  if differ:
    raise CorruptCheckpointError(
        f'The checkpoint {where} is corrupt: {len(differ)} of {len(got)} arrays differ from the checksums written '
        f'with it (e.g. {", ".join(differ[:3])}).', 'checksum')


def _stored_checksums(checkpoint_manager: ocp.CheckpointManager, step: int, where: str) -> dict[str, str] | None:
  """The checksums saved with checkpoint `step`; None for a checkpoint of a version that wrote none."""
  try:
    custom = checkpoint_manager.metadata(step).custom_metadata
  except Exception as e:  # Orbax raises several types for an unreadable metadata file.
    raise CorruptCheckpointError(
        f'The checkpoint {where} is corrupt: its metadata cannot be read: '
        f'{type(e).__name__}: {e}', 'unreadable') from e
  return (custom or {}).get('checksums')


def _check_fits(directory: str, step: int, like: Any, where: str) -> dict[str, Any]:
  """Raises CheckpointError if the structure or shapes saved as checkpoint `step` differ from `like`'s (another
  config: no checkpoint of the directory will fit), CorruptCheckpointError if they cannot be read.

  Returns:
    The stored tree's metadata.
  """
  try:
    stored = reader(directory).item_metadata(step).tree
  except Exception as e:  # Orbax raises several types for unreadable metadata.
    raise CorruptCheckpointError(
        f'The checkpoint {where} is corrupt: the description of its arrays cannot be read: '
        f'{type(e).__name__}: {e}', 'unreadable') from e
  problem = _difference(like, jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored))
  if problem:
    raise _another_config(where, f'it {problem}')
  return stored


def _absent_empty_entries(like: Any, stored: dict[str, Any]) -> list[str]:
  """The top-level entries of `like` that hold no array and that the stored tree lacks: entries a later version
  added to the state, empty in this config (e.g. 'g_ema' without an average of G), absent from checkpoints of
  earlier versions. Restoring them would fail as an unreadable checkpoint."""
  if not dataclasses.is_dataclass(like):
    return []
  return [
      f.name for f in dataclasses.fields(like) if f.name not in stored and not jax.tree.leaves(getattr(like, f.name))
  ]


def restore(checkpoint_manager: ocp.CheckpointManager, step: int, like: Any, verified_from: int = 0) -> Any:
  """Restores checkpoint `step` into the structure, shapes and shardings of `like` (a pytree of jax.Arrays) and
  verifies it against the checksums saved with it.

  Args:
    checkpoint_manager: the manager of the checkpoints.
    step: the checkpoint.
    like: the state to restore into.
    verified_from: checkpoints of this step and later must carry checksums; older ones may lack them (written by
      a version that wrote none) and are then restored unverified, with a warning.

  Raises:
    CheckpointError: the checkpoint does not fit `like` (written with another config).
    CorruptCheckpointError: it does not load, or it differs from its checksums.
  """
  directory = str(checkpoint_manager.directory)
  where = os.path.join(directory, str(step))
  stored = _stored_checksums(checkpoint_manager, step, where)
  if stored is None and step >= verified_from:
    raise CorruptCheckpointError(
        f'The checkpoint {where} has no checksums, which every checkpoint of this run '
        f'from step {verified_from} on was written with.', 'unchecksummed')
  absent = _absent_empty_entries(like, _check_fits(directory, step, like, where))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
  if not absent:
    return _restore_verified(checkpoint_manager, step, ocp.args.StandardRestore(abstract), where, stored)
  target = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract) if f.name not in absent}
  restored = _restore_verified(checkpoint_manager, step, ocp.args.StandardRestore(target), where, stored)
  return dataclasses.replace(like, **restored)


def restore_latest(checkpoint_manager: ocp.CheckpointManager, like: Any,
                   verified_from: int = 0) -> tuple[Any, int | None]:
  """The newest checkpoint that loads and verifies (`restore`), and its step; (`like`, None) if there is none.

  Each newer checkpoint that fails is reported, set aside as `<step>.corrupt-<reason>` (by process 0; never
  deleted) and skipped. Every process must call this: all read each checkpoint, and wait for one another around
  the renaming.

  Raises:
    CheckpointError: a checkpoint does not fit `like` (written with another config).
  """
  directory = str(checkpoint_manager.directory)
  failed = []
  for step in sorted(checkpoint_manager.all_steps(), reverse=True):
    try:
      state = restore(checkpoint_manager, step, like, verified_from)
    except CorruptCheckpointError as e:
      failed.append(step)
      if jax.process_index() == 0:
        moved = files.set_aside(os.path.join(directory, str(step)), e.reason)
        logging.error('%s Set aside as %s; falling back to the previous checkpoint.', e, moved)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
      checkpoint_manager.reload()
      continue
    if failed:
      logging.warning('Fell back to the checkpoint at step %d: those of steps %s did not verify.', step, failed)
    return state, step
  if failed:
    logging.warning('No checkpoint in %s verifies (steps %s were set aside): training starts afresh.', directory,
                    failed)
  return like, None


def prune(checkpoint_manager: ocp.CheckpointManager, keep: int) -> list[int]:
  """Deletes all but the newest `keep` checkpoints; returns the deleted steps. Every process must call this.

  Orbax prunes after each save has committed. A run killed between a save's commit and that pruning (the final save
  above all), or resumed with a smaller `keep_checkpoints` and nothing left to train, would otherwise keep the older
  checkpoints for good. Set-aside (corrupt) checkpoints are not steps and are never touched.
  """
  extra = sorted(checkpoint_manager.all_steps())[:-keep]
  for step in extra:
    checkpoint_manager.delete(step)
  if extra:
    logging.info('Deleted the checkpoints of steps %s: only the newest %d are kept.', extra, keep)
  return extra


def restore_entry(checkpoint_manager: ocp.CheckpointManager, step: int, name: str, like: Any,
                  verified_from: int | None) -> Any:
  """Reads one top-level entry of the pytree saved as checkpoint `step` (e.g. the generator 'g' of the GAN's
  state), and no array of the others, and verifies it against the checksums saved with it.

  Args:
    checkpoint_manager: a manager from `reader`.
    step: the checkpoint.
    name: the entry.
    like: the entry's expected structure, with jax.ShapeDtypeStruct leaves whose shardings say where the arrays go.
    verified_from: checkpoints of this step and later must carry checksums (the run's identity says from which
      step its checkpoints were written with them); None when the work directory has no identity record (a version
      older than checksums): a checkpoint without checksums is then read unverified, with a warning.

  Raises:
    CheckpointError: the stored entry's structure or shapes differ from `like`'s (written with another config).
    CorruptCheckpointError: the checkpoint does not load, or the entry differs from its checksums.
  """
  where = os.path.join(str(checkpoint_manager.directory), str(step))
  stored_sums = _stored_checksums(checkpoint_manager, step, where)
  if stored_sums is None and verified_from is not None and step >= verified_from:
    # Damaged metadata can read as metadata without checksums: a checkpoint of this run is never read unverified.
    raise CorruptCheckpointError(
        f'The checkpoint {where} has no checksums, which every checkpoint of this run from step {verified_from} on '
        'was written with: it cannot be verified.', 'unchecksummed')
  try:
    stored = checkpoint_manager.item_metadata(step).tree
  except Exception as e:  # Orbax raises several types for unreadable metadata.
    raise CorruptCheckpointError(
        f'The checkpoint {where} is corrupt: the description of its arrays cannot be read: '
        f'{type(e).__name__}: {e}', 'unreadable') from e
  if name not in stored:
    raise _another_config(where, f'it has no entry {name!r}')
  # Orbax's partial restore skips the stored arrays missing from the target without a word, so a target that lacks
  # some of the stored entry's arrays is refused here, before anything is read.
  problem = _difference(like, jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored[name]))
  if problem:
    raise _another_config(where, f'it {problem}')
  item = {name: like}
  args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                partial_restore=True)
  return _restore_verified(checkpoint_manager, step, args, where, stored_sums, name)


class Saver:
  """Asynchronous saves through a CheckpointManager whose failures raise CheckpointError naming the step.

  Orbax writes in a background thread and reports a failed write only at the next `save` or
  `wait_until_finished`, as a bare error of its storage layer. `save` first waits for the previous save, so an
  error always names the step whose checkpoint could not be written, the directory, and the likely cause.
  """

  def __init__(self, checkpoint_manager: ocp.CheckpointManager):
    self.manager = checkpoint_manager
    self._pending: int | None = None

  def save(self, step: int, state: Any) -> None:
    """Starts saving `state` as checkpoint `step`, with the checksums of its arrays, after the previous save has
    completed."""
    self.wait()
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), force=True,
                        custom_metadata={'checksums': checksums(state)})
    except Exception as e:  # Orbax and TensorStore raise several types for a failed write.
      raise self._save_error(step, e) from e
    self._pending = step

  def wait(self) -> None:
    """Blocks until the last save has completed; raises CheckpointError if it failed."""
    step, self._pending = self._pending, None
    if step is None:
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # Orbax re-raises the background thread's error, of any type.
      raise self._save_error(step, e) from e

  def last_complete(self) -> str:
    """Where the run stands on disk, in words: the last complete checkpoint is intact and a rerun resumes from it."""
    self.manager.reload()  # Drops a failed step, which the manager lists from the moment `save` returns.
    latest = self.manager.latest_step()
    return (f'the last complete checkpoint, step {latest}, is intact and a rerun resumes from it'
            if latest is not None else 'there is no complete checkpoint yet')

  def _save_error(self, step: int, error: Exception) -> CheckpointError:
    return CheckpointError(f'Could not write the checkpoint of step {step} into {self.manager.directory} (is the '
                           f'disk full, or the directory not writable?); {self.last_complete()}. '
                           f'{type(error).__name__}: {error}')


def save_artefact(path: str, tree: Any) -> None:
  """Saves a pytree of arrays to `path` (a directory that must not exist yet), with the checksums of its arrays."""
  tree = jax.tree.map(np.asarray, tree)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), tree, custom_metadata={'checksums': checksums(tree)})
  checkpointer.wait_until_finished()


def restore_artefact(path: str, like: Any | None = None, verified: bool = True) -> Any:
  """Restores a pytree saved by `save_artefact`, as numpy arrays, verified against its checksums.

  Args:
    path: the artefact directory.
    like: optional pytree with the expected structure and shapes; a mismatch raises CheckpointError naming the
      offending entry (e.g. a checkpoint written with another config).
    verified: the artefact must carry checksums (`save_artefact` writes them); False reads one that has none (an
      item of a GAN checkpoint such as `<step>/default`, for tests and tools) and verifies it only if it has them.

  Raises:
    CorruptCheckpointError: `path` is missing, does not load, lacks its checksums or differs from them.
    CheckpointError: it does not fit `like`.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CorruptCheckpointError(f'No checkpoint at {path}.', 'missing')
  checkpointer = ocp.StandardCheckpointer()
  try:
    with preemption.deferred_in_library():
      tree = checkpointer.restore(path)
  except Exception as e:  # Orbax raises several types for unreadable files; one message names the path.
    raise CorruptCheckpointError(f'Cannot read the checkpoint at {path}: {e}', 'unreadable') from e
  tree = jax.tree.map(np.asarray, tree)
  if like is not None:
    check_compatible(like, tree, path)
  stored = None
  if os.path.exists(os.path.join(path, '_CHECKPOINT_METADATA')):
    try:
      stored = (checkpointer.metadata(path).custom_metadata or {}).get('checksums')
    except Exception as e:  # Orbax raises several types for an unreadable metadata file.
      raise CorruptCheckpointError(f'The checkpoint {path} is corrupt: its metadata cannot be read: {e}',
                                   'unreadable') from e
  if stored is None and verified:
    # Damaged metadata can read as metadata without checksums: never used unverified.
    raise CorruptCheckpointError(
        f'The checkpoint {path} has no checksums, which every artefact is written with: it cannot be verified.',
        'unchecksummed')
  if stored is not None:
    verify(stored, tree, path)
  return tree


def check_compatible(expected: Any, found: Any, where: str) -> None:
  """Raises CheckpointError naming the first entry whose structure or shape differs."""
  problem = _difference(expected, found)
  if problem:
    raise CheckpointError(f'Checkpoint {where} {problem}: was it written with another config?')


def _difference(expected: Any, found: Any) -> str | None:
  """The first entry whose structure or shape differs, in words ('lacks ...'), or None."""
  exp = {_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(found)[0]}
  for name in sorted(exp.keys() | got.keys()):
    if name not in got:
      return f'lacks {name}'
    if name not in exp:
      return f'has an unexpected entry {name}'
    if np.shape(exp[name]) != np.shape(got[name]):
      return f'has {name} of shape {np.shape(got[name])} but the current config expects {np.shape(exp[name])}'
  return None


def _restore_verified(checkpoint_manager: ocp.CheckpointManager, step: int, args: Any, where: str, stored: dict | None,
                      name: str | None = None) -> Any:
  """Restores `step` with `args` (entry `name` alone if given) and verifies it against the `stored` checksums.

  A checkpoint that does not load is a CorruptCheckpointError; one without checksums (older versions) is
  restored unverified, with a warning.
  """
  try:
    with preemption.deferred_in_library():
      restored = checkpoint_manager.restore(step, args=args)
  except Exception as e:  # Orbax and TensorStore raise several types for missing or damaged files.
    raise CorruptCheckpointError(f'The checkpoint {where} is corrupt: it does not load: {type(e).__name__}: {e}',
                                 'unreadable') from e
  if name is not None:
    restored = restored[name]
  if stored is None:
    logging.warning(
        'The checkpoint %s has no checksums (written by an older version, before they existed): read '
        'unverified.', where)
  else:
    verify(stored, restored, where, prefix=name or '')
  return restored
