"""Checksummed checkpoints: a damaged checkpoint is reported, set aside (never deleted) and the previous one used."""

import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from face2music_jax import checkpoint


def _state(offset: float) -> dict:
  return {'a': jnp.arange(1000, dtype=jnp.float32) + offset, 'b': {'c': jnp.full((50, 40), offset, jnp.float32)}}


def _saved(directory: str, steps: tuple[int, ...]) -> checkpoint.Saver:
  saver = checkpoint.Saver(checkpoint.manager(directory, keep=5))
  for step in steps:
    saver.save(step, _state(float(step)))
  saver.wait()
  return saver


def _largest_data_file(path: str) -> str:
  """The largest array data file of a checkpoint (its OCDBT data, where the arrays' bytes are)."""
  data = [os.path.join(root, f) for root, _, names in os.walk(path) for f in names if os.path.basename(root) == 'd']
  return max(data, key=os.path.getsize)


def flip_one_bit(path: str) -> None:
  """Flips one bit in the middle of the largest data file under `path`."""
  target = _largest_data_file(path)
  with open(target, 'r+b') as f:
    raw = bytearray(f.read())
    raw[len(raw) // 2] ^= 0x10
    f.seek(0)
    f.write(raw)


def _assert_equal(tree, expected) -> None:
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('damage', ['flip_one_bit', 'truncate', 'delete_metadata'])
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_restored(tmp_path, damage, caplog):
  directory = str(tmp_path / 'checkpoints')
  saver = _saved(directory, (1, 2))
  newest = os.path.join(directory, '2')
  if damage == 'flip_one_bit':
    flip_one_bit(newest)
  elif damage == 'truncate':
    target = _largest_data_file(newest)
    os.truncate(target, os.path.getsize(target) // 2)
  else:
    os.remove(os.path.join(newest, 'default', '_METADATA'))
  state, step = checkpoint.restore_latest(saver.manager, _state(0.0))
  assert step == 1
  _assert_equal(state, _state(1.0))
  aside = [n for n in os.listdir(directory) if n.startswith('2.corrupt-')]
  assert len(aside) == 1 and not os.path.exists(newest), os.listdir(directory)
  assert 'is corrupt' in caplog.text and 'Fell back to the checkpoint at step 1' in caplog.text
  assert saver.manager.all_steps() == [1]


def test_an_intact_checkpoint_restores_and_verifies(tmp_path):
  saver = _saved(str(tmp_path / 'checkpoints'), (1, 2))
  state, step = checkpoint.restore_latest(saver.manager, _state(0.0))
  assert step == 2
  _assert_equal(state, _state(2.0))
  assert checkpoint.restore_entry(checkpoint.reader(str(tmp_path / 'checkpoints')), 2, 'b',
                                  {'c': np.zeros((50, 40), np.float32)}, 0)['c'][0, 0] == 2.0


@flax.struct.dataclass
class _Before:
  """A state of an earlier version."""
  a: jax.Array
  opt: tuple


@flax.struct.dataclass
class _After:
  """The same state after a version added an entry, empty unless a config asks for it (as TrainState's g_ema)."""
  a: jax.Array
  opt: tuple
  extra: dict = flax.struct.field(default_factory=dict)


def test_a_checkpoint_of_an_earlier_version_resumes_where_a_later_one_added_an_empty_entry(tmp_path):
  """Not set aside as unreadable, and restored whole with its checksums verified; an added entry that holds arrays
  is a checkpoint of another config, reported as such and left where it is."""
  directory = str(tmp_path / 'checkpoints')
  saver = checkpoint.Saver(checkpoint.manager(directory, keep=5))
  saved = _Before(a=jnp.arange(10, dtype=jnp.float32), opt=(jnp.ones(3), {'m': jnp.full((2,), 7.0)}))
  saver.save(4, saved)
  saver.wait()
  like = _After(a=jnp.zeros(10), opt=(jnp.zeros(3), {'m': jnp.zeros(2)}))
  state, step = checkpoint.restore_latest(saver.manager, like)
  assert step == 4 and isinstance(state, _After) and state.extra == {}
  assert isinstance(state.opt, tuple)
  _assert_equal(state, saved)
  with pytest.raises(checkpoint.CheckpointError, match='lacks extra/w'):
    checkpoint.restore_latest(saver.manager, like.replace(extra={'w': jnp.zeros(2)}))
  assert os.listdir(directory) == ['4']


def test_a_checkpoint_without_checksums_is_corrupt_unless_older_than_the_run_record(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  manager = checkpoint.manager(directory, keep=5)
  manager.save(3, args=ocp.args.StandardSave(_state(3.0)))  # As an older version saved: no checksums.
  manager.wait_until_finished()
  state, step = checkpoint.restore_latest(manager, _state(0.0), verified_from=4)
  assert step == 3
  _assert_equal(state, _state(3.0))
  state, step = checkpoint.restore_latest(manager, _state(0.0), verified_from=0)
  assert step is None and os.listdir(directory) == ['3.corrupt-unchecksummed']


def test_a_corrupt_artefact_is_named(tmp_path):
  path = str(tmp_path / 'artefact')
  checkpoint.save_artefact(path, {'w': np.arange(5000, dtype=np.float32)})
  np.testing.assert_array_equal(checkpoint.restore_artefact(path)['w'], np.arange(5000))
  flip_one_bit(path)
  with pytest.raises(checkpoint.CorruptCheckpointError, match=f'{path}'):
    checkpoint.restore_artefact(path)
  shutil.rmtree(path)
  with pytest.raises(checkpoint.CorruptCheckpointError, match=f'No checkpoint at {path}'):
    checkpoint.restore_artefact(path)
