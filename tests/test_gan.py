"""The GAN room: the generator restored alone from a checkpoint of the whole state, and G in eval mode."""

import os
import re

import jax
import numpy as np
import pytest

from face2music_jax import checkpoint
from face2music_jax import gan
from face2music_jax.models import discriminator as d_lib
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


def _save_state(config, workdir: str, step: int = 4) -> gan.TrainState:
  """A fresh state of `config` saved as the GAN checkpoint `step` of `workdir`, as training saves it."""
  state = jax.jit(gan.Models(config).init)(jax.random.key(config.seed))
  saver = checkpoint.Saver(checkpoint.manager(os.path.join(workdir, 'checkpoints'), keep=3))
  saver.save(step, state)
  saver.wait()
  return state


def test_restore_generator_reads_the_generator_alone(tmp_path, monkeypatch):
  config = helpers.tiny_config('aux')
  workdir = str(tmp_path / 'workdir')
  state = _save_state(config, workdir)
  with monkeypatch.context() as patch:
    patch.setattr(d_lib, 'make_discriminator', lambda *args: pytest.fail('The discriminator was built.'))
    patch.setattr(gan.Models, 'init', lambda *args: pytest.fail('The whole state was initialised.'))
    generator, g_vars, step = gan.restore_generator(config, workdir)
  assert step == 4 and set(g_vars) == {'params', 'batch_stats', 'face_space'}
  expected = dict(jax.tree_util.tree_flatten_with_path(gan.to_host(state.g))[0])
  got = dict(jax.tree_util.tree_flatten_with_path(gan.to_host(g_vars))[0])
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(got[key], value, err_msg=jax.tree_util.keystr(key))
  # G in eval mode, as training's own apply computes it.
  z = np.random.default_rng(0).normal(size=(3, config.data.embedding_dim)).astype(np.float32)
  pitch = np.array([0, 5, 12], np.int32)
  audio = gan.make_generate(generator)(g_vars, z, pitch)
  assert audio.shape == (3, config.audio.length)
  # Both compiled with the same arguments: the harmonic synthesiser's float32 phases (exact to ~1e-5 cycles)
  # round differently op by op, or with the pitch folded in as a constant, which the upper partials turn into
  # differences of ~1e-4.
  trained = jax.jit(lambda g, z, p: gan.Models(config).generate(g, z, p, train=False)[0])(state.g, z, pitch)
  np.testing.assert_allclose(audio, trained, atol=1e-6)


def test_restore_generator_names_a_missing_checkpoint_and_creates_nothing(tmp_path):
  config = helpers.tiny_config('aux')
  workdir = str(tmp_path / 'untrained')
  message = (f'No GAN checkpoint in {workdir}/checkpoints: train first, e.g. python run_train.py '
             f'--config=configs/aux.py:tiny --workdir={workdir}')
  with pytest.raises(checkpoint.CheckpointError, match=re.escape(message)):
    gan.restore_generator(config, workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('field, saved, restored', [('dim', 2, 4), ('post_filter', 5, 0)])
def test_a_checkpoint_of_another_config_fails_clearly(tmp_path, field, saved, restored):
  """Other shapes, or a generator with fewer arrays than the saved one (which a partial restore would accept)."""
  config = helpers.tiny_config('aux')
  config.model.generator = 'wavegan'
  config.model.wavegan[field] = saved
  workdir = str(tmp_path / 'workdir')
  _save_state(config, workdir)
  config.model.wavegan[field] = restored
  with pytest.raises(checkpoint.CheckpointError, match=r'another config\? Use another --workdir'):
    gan.restore_generator(config, workdir)


def test_restore_generator_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path, caplog):
  config = helpers.tiny_config('aux')
  workdir = str(tmp_path / 'workdir')
  _save_state(config, workdir, step=2)
  _save_state(config, workdir, step=4)
  newest = os.path.join(workdir, 'checkpoints', '4')
  for root, _, names in os.walk(newest):
    for name in names:
      if os.path.basename(root) == 'd':  # Every array data file, cut in half.
        os.truncate(os.path.join(root, name), os.path.getsize(os.path.join(root, name)) // 2)
  _, _, step = gan.restore_generator(config, workdir)
  assert step == 2
  assert f'The checkpoint {newest} is corrupt' in caplog.text
  assert os.path.isdir(newest)  # Left where it is: only training sets checkpoints aside.


@pytest.mark.parametrize('damage', [b'\x00\xff garbage', b'{}', None])
def test_a_checkpoint_whose_metadata_is_damaged_is_never_read_unverified(tmp_path, caplog, damage):
  """Its checksums gone (metadata garbled, emptied or deleted) and its arrays damaged: the run's identity says its
  checkpoints carry checksums, so it is skipped, never used as "written by an older version"."""
  from face2music_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = helpers.tiny_config('aux')
  workdir = str(tmp_path / 'workdir')
  workdir_lib.accept_run(config, workdir)
  _save_state(config, workdir, step=2)
  _save_state(config, workdir, step=4)
  newest = os.path.join(workdir, 'checkpoints', '4')
  metadata = os.path.join(newest, '_CHECKPOINT_METADATA')
  if damage is None:
    os.remove(metadata)
  else:
    with open(metadata, 'wb') as f:
      f.write(damage)
  _, _, step = gan.restore_generator(config, workdir)
  assert step == 2
  assert f'The checkpoint {newest}' in caplog.text and 'older version' not in caplog.text
  os.remove(os.path.join(workdir, 'checkpoints', '2', '_CHECKPOINT_METADATA'))
  with pytest.raises(checkpoint.CheckpointError, match=f'No GAN checkpoint in {workdir}/checkpoints verifies'):
    gan.restore_generator(config, workdir)
