"""Checkpoints with Orbax: the GAN's periodic checkpoints and the prerequisite stages' frozen artefacts.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a process killed during a
save leaves no checkpoint that `latest_step()` would pick up.
"""

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint is missing, unreadable or does not match the model of the current config."""


def manager(directory: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


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
  exp = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(found)[0])
  for key in exp.keys() | got.keys():
    name = jax.tree_util.keystr(key)
    if key not in got:
      raise CheckpointError(f'Checkpoint {where} lacks {name}: was it written with another config?')
    if key not in exp:
      raise CheckpointError(f'Checkpoint {where} has an unexpected entry {name}: was it written with another config?')
    if np.shape(exp[key]) != np.shape(got[key]):
      raise CheckpointError(f'Checkpoint {where}: {name} has shape {np.shape(got[key])} but the current config '
                            f'expects {np.shape(exp[key])}: was it written with another config?')
