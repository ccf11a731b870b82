"""Checkpoints with Orbax: the GAN's periodic checkpoints and the prerequisite stages' frozen artefacts.

Orbax writes each checkpoint into a temporary directory (`<step>.orbax-checkpoint-tmp`) and renames it to `<step>`
only after every file is written, so a process killed during a save (even during the final rename: rename is
atomic) leaves no checkpoint that `latest_step()` would pick up; the manager deletes such leftovers when it is
created. Saves are asynchronous: `Saver` reports a failed write (e.g. a full disk) naming its step. `restore_entry`
reads one entry of a checkpoint alone (evaluation and translation read the generator's).
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint is missing, unreadable, cannot be written or does not match the model of the current config."""


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
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers=ocp.PyTreeCheckpointHandler())


def _another_config(where: str, problem: Any) -> CheckpointError:
  return CheckpointError(f'The checkpoint {where} does not fit the model of this config (was it written with '
                         f'another config? Use another --workdir): {problem}')


def restore(checkpoint_manager: ocp.CheckpointManager, step: int, like: Any) -> Any:
  """Restores checkpoint `step` into the structure, shapes and shardings of `like` (a pytree of jax.Arrays).

  Raises:
    CheckpointError: the checkpoint does not fit `like` (written with another config).
  """
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
  try:
    return checkpoint_manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except (ValueError, KeyError) as e:
    raise _another_config(os.path.join(str(checkpoint_manager.directory), str(step)), e) from e


def restore_entry(checkpoint_manager: ocp.CheckpointManager, step: int, name: str, like: Any) -> Any:
  """Reads one top-level entry of the pytree saved as checkpoint `step` (e.g. the generator 'g' of the GAN's
  state), and no array of the others.

  Args:
    checkpoint_manager: a manager from `reader`.
    step: the checkpoint.
    name: the entry.
    like: the entry's expected structure, with jax.ShapeDtypeStruct leaves whose shardings say where the arrays go.

  Raises:
    CheckpointError: the stored entry's structure or shapes differ from `like`'s (written with another config).
  """
  where = os.path.join(str(checkpoint_manager.directory), str(step))
  stored = checkpoint_manager.item_metadata(step).tree
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
  return checkpoint_manager.restore(step, args=args)[name]


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
    """Starts saving `state` as checkpoint `step` after the previous save has completed."""
    self.wait()
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
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

  def _save_error(self, step: int, error: Exception) -> CheckpointError:
    self.manager.reload()  # Drops the failed step, which the manager lists from the moment `save` returns.
    latest = self.manager.latest_step()
    kept = (f'the last complete checkpoint, step {latest}, is intact and a rerun resumes from it'
            if latest is not None else 'there is no complete checkpoint yet')
    return CheckpointError(f'Could not write the checkpoint of step {step} into {self.manager.directory} (is the '
                           f'disk full, or the directory not writable?); {kept}. {type(error).__name__}: {error}')


def save_artefact(path: str, tree: Any) -> None:
  """Saves a pytree of arrays to `path` (a directory that must not exist yet)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), jax.tree.map(np.asarray, tree))
  checkpointer.wait_until_finished()


def restore_artefact(path: str, like: Any | None = None) -> Any:
  """Restores a pytree saved by `save_artefact`, as numpy arrays.

  Args:
    path: the artefact directory.
    like: optional pytree with the expected structure and shapes; a mismatch raises CheckpointError naming the
      offending entry (e.g. a checkpoint written with another config).
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f'No checkpoint at {path}.')
  try:
    tree = ocp.StandardCheckpointer().restore(path)
  except Exception as e:  # Orbax raises several types for unreadable files; one message names the path.
    raise CheckpointError(f'Cannot read the checkpoint at {path}: {e}') from e
  tree = jax.tree.map(np.asarray, tree)
  if like is not None:
    check_compatible(like, tree, path)
  return tree


def check_compatible(expected: Any, found: Any, where: str) -> None:
  """Raises CheckpointError naming the first entry whose structure or shape differs."""
  problem = _difference(expected, found)
  if problem:
    raise CheckpointError(f'Checkpoint {where} {problem}: was it written with another config?')


def _difference(expected: Any, found: Any) -> str | None:
  """The first entry whose structure or shape differs, in words ('lacks ...'), or None."""
  exp = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(found)[0])
  for key in exp.keys() | got.keys():
    name = jax.tree_util.keystr(key)
    if key not in got:
      return f'lacks {name}'
    if key not in exp:
      return f'has an unexpected entry {name}'
    if np.shape(exp[key]) != np.shape(got[key]):
      return f'has {name} of shape {np.shape(got[key])} but the current config expects {np.shape(exp[key])}'
  return None
