"""The prerequisite stages: data built in two processes, the pairwise distance statistics, corrupt artefacts set
aside."""

import glob
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy.spatial.distance import pdist

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import losses
from face2music_jax import stages
from face2music_jax import synthetic
from face2music_jax.data import default_faces
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.data import notes as notes_data
from face2music_jax.evaluators import photos
from face2music_jax.models import audio_embedding as embedding_lib
from tests import helpers
from tests import test_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data_config(data_dir: str) -> ml_collections.ConfigDict:
  config = helpers.tiny_config()
  config.data_dir = data_dir
  return config


def _started_processes(monkeypatch) -> list[subprocess.Popen]:
  """The processes that subprocess.Popen starts from now on (the second process of ensure_data)."""
  started = []
  popen = subprocess.Popen
  monkeypatch.setattr(subprocess, 'Popen', lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
  return started


def _read_all(builder) -> dict[str, list[tuple]]:
  """Every feature of every note of every split, in id order."""
  out = {}
  for split in builder.info.splits:
    notes = sorted(builder.as_dataset(split=split).as_numpy_iterator(), key=lambda n: n['id'])
    out[split] = [_flat(n) for n in notes]
  return out


def _flat(example: dict, prefix: str = '') -> list[tuple[str, bytes]]:
  """An example's features (nested ones, as 'qualities', by their dotted names) as (name, bytes), sorted."""
  out = []
  for k, v in sorted(example.items()):
    out += _flat(v, f'{prefix}{k}.') if isinstance(v, dict) else [(prefix + k, np.asarray(v).tobytes())]
  return out


@pytest.mark.slow  # Builds data in two processes.
def test_the_notes_built_in_a_second_process_are_those_built_in_one(tmp_path, monkeypatch):
  started = _started_processes(monkeypatch)
  both = _data_config(str(tmp_path / 'both'))
  stages.ensure_data(both)  # Notes and faces missing: the notes render in a second process.
  assert len(started) == 1 and started[0].returncode == 0
  assert default_faces.is_built(both) and notes_data.notes_builder(both).is_prepared()
  here = notes_data.prepare_notes(_data_config(str(tmp_path / 'here')))
  assert len(started) == 1
  got, want = _read_all(notes_data.notes_builder(both)), _read_all(here)
  assert sorted(got) == ['test', 'train', 'valid'] and got == want


@pytest.mark.slow
def test_an_error_of_the_second_process_is_raised_here_after_the_faces_are_built(tmp_path):
  config = _data_config(str(tmp_path / 'data'))
  garbage = tmp_path / 'garbage.sf2'  # Read first by the renderer, in the second process.
  garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
  config.notes.soundfont = str(garbage)
  with pytest.raises(notes_data.SoundFontError, match='garbage.sf2') as raised:
    stages.ensure_data(config)
  assert 'Raised in the process rendering the notes' in str(raised.value.__notes__)
  assert default_faces.is_built(config) and not notes_data.notes_builder(config).is_prepared()


def _slow_notes_config(data_dir: str) -> ml_collections.ConfigDict:
  """The tiny config with 24 times its notes: they take seconds to write, time enough to stop them meanwhile."""
  config = _data_config(data_dir)
  config.notes.velocities = tuple(range(31, 128, 4))
  return config


def _partial_notes(data_dir: str) -> list[str]:
  return glob.glob(os.path.join(data_dir, 'tfds', notes_data.SoundfontNotes.name, '*', 'incomplete*'))


@pytest.mark.slow
def test_a_stop_while_the_notes_render_ends_the_second_process_and_leaves_no_partial_notes(tmp_path, monkeypatch):
  started = _started_processes(monkeypatch)
  data_dir = str(tmp_path / 'data')
  config = _slow_notes_config(data_dir)

  def stopped_when_the_notes_are_being_written(unused_config):
    deadline = time.time() + 300
    while not _partial_notes(data_dir):
      assert started[0].poll() is None and time.time() < deadline, f'the notes process ended: {started[0].returncode}'
      time.sleep(0.01)
    raise KeyboardInterrupt  # As SIGTERM's Preempted or Ctrl-C would, here.

  monkeypatch.setattr(default_faces, 'prepare_default_faces', stopped_when_the_notes_are_being_written)
  with pytest.raises(KeyboardInterrupt):
    stages.ensure_data(config)
  assert len(started) == 1 and started[0].returncode == 3  # Stopped through its clean-up, and waited for.
  assert not _partial_notes(data_dir) and not notes_data.notes_builder(config).is_prepared()


_KILLED_RUN = """
import sys
from face2music_jax import stages
from face2music_jax.data import default_faces
from tests import test_stages
default_faces.prepare_default_faces = lambda config: __import__('time').sleep(600)  # The faces take long.
stages.ensure_data(test_stages._slow_notes_config(sys.argv[1]))
"""


def _running(pid: int) -> bool:
  """Whether process `pid` exists and is not a zombie (an orphan that ended but was not reaped yet)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split()[2] != 'Z'
  except FileNotFoundError:
    return False


@pytest.mark.slow
def test_when_the_run_is_killed_the_notes_process_stops_and_leaves_no_partial_notes(tmp_path):
  data_dir = str(tmp_path / 'data')
  run = subprocess.Popen([sys.executable, '-c', _KILLED_RUN, data_dir], cwd=ROOT)
  try:
    deadline = time.time() + 300
    while not _partial_notes(data_dir):
      assert run.poll() is None and time.time() < deadline, run.returncode
      time.sleep(0.01)
    with open(f'/proc/{run.pid}/task/{run.pid}/children') as f:
      (child,) = [int(pid) for pid in f.read().split()]
  finally:
    run.kill()
    run.wait()
  deadline = time.time() + 60
  while _running(child):
    assert time.time() < deadline, 'the notes process still runs a minute after the run was killed'
    time.sleep(0.05)
  assert not _partial_notes(data_dir) and not notes_data.notes_builder(_slow_notes_config(data_dir)).is_prepared()


def test_pairwise_distance_stats_estimate_the_mean_and_std_over_all_pairs():
  x = np.random.default_rng(0).normal(size=(60, 5))
  exact = pdist(x)
  mu, sigma = stages.pairwise_distance_stats(x, num_pairs=200_000, seed=3)
  np.testing.assert_allclose(mu, exact.mean(), rtol=0.01)
  np.testing.assert_allclose(sigma, exact.std(), rtol=0.02)
  assert stages.pairwise_distance_stats(x, 1000, seed=3) == stages.pairwise_distance_stats(x, 1000, seed=3)


def test_pairwise_distance_stats_within_groups_estimate_those_of_the_pairs_of_one_group():
  rng = np.random.default_rng(1)
  groups = rng.integers(0, 6, 80)
  groups[groups == 5] = 7  # Labels need not be consecutive;
  groups[0] = 9  # a group of one has no pair.
  x = rng.normal(size=(80, 4)) + 100.0 * groups[:, None]  # Pairs across groups would be ~100 apart.
  # The estimator's target: i uniform over the rows with a partner in their group, j uniform over those partners.
  per_row = []
  for i in range(80):
    others = np.flatnonzero((groups == groups[i]) & (np.arange(80) != i))
    if len(others):
      per_row.append(np.linalg.norm(x[others] - x[i], axis=-1))
  mean = np.mean([d.mean() for d in per_row])
  std = np.sqrt(np.mean([np.mean((d - mean)**2) for d in per_row]))
  mu, sigma = stages.pairwise_distance_stats(x, num_pairs=200_000, seed=3, within=groups)
  np.testing.assert_allclose(mu, mean, rtol=0.01)
  np.testing.assert_allclose(sigma, std, rtol=0.02)
  with pytest.raises(ValueError, match='group of at least 2'):
    stages.pairwise_distance_stats(x[:3], 10, seed=0, within=np.arange(3))


def test_statistics_of_other_audio_pairs_are_set_aside_and_computed_again(tiny_data_dir, tmp_path):
  """A run taken over by a config with other metric_pairs (workdir.accept_run keeps artefacts when only train.*
  fields differ) gets statistics of its own pairs."""
  config = helpers.tiny_config('aux')
  config.data_dir = tiny_data_dir
  metric = helpers.random_metric(config)
  path = tmp_path / 'statistics.json'
  any_pairs = stages.ensure_statistics(config, str(tmp_path), metric)
  assert files.read_json(str(path), checksum=True)['audio_pairs'] == 'any'
  config.train.metric_pairs = 'one_pitch'
  one_pitch = stages.ensure_statistics(config, str(tmp_path), metric)
  assert files.read_json(str(path), checksum=True)['audio_pairs'] == 'same_pitch'
  assert one_pitch['mu_x'] == any_pairs['mu_x'] and one_pitch['mu_y'] != any_pairs['mu_y']
  assert (tmp_path / 'statistics.json.stale-config').exists()
  assert stages.ensure_statistics(config, str(tmp_path), metric) == one_pitch
  assert not (tmp_path / 'statistics.json.stale-config-2').exists()  # Read back, not set aside again.


def test_statistics_in_another_audio_space_are_set_aside_and_computed_again(tiny_data_dir, tmp_path):
  """train.metric_features 'mfcc' standardises Eq. 1 by the real notes' distances in phi's MFCC half, 'both' by
  those in phi and in that half; a file recorded for another space is set aside, one of this space read back."""
  config = helpers.tiny_config('aux')
  config.data_dir, config.train.metric_features = tiny_data_dir, 'phi'
  metric = helpers.random_metric(config)
  path = tmp_path / 'statistics.json'
  in_phi = stages.ensure_statistics(config, str(tmp_path), metric)
  assert files.read_json(str(path), checksum=True)['metric_features'] == 'phi' and set(in_phi) == set(losses.STATS_KEYS)
  # The real notes' MFCC half, as the stage samples its pairs.
  notes = inputs_lib.Inputs(config).notes('train')['audio'][:config.stats.max_examples]
  mfcc = np.asarray(embedding_lib.phi(metric, jnp.asarray(notes), config))[:, -config.mfcc.n_mfcc:]
  expected = stages.pairwise_distance_stats(mfcc, config.stats.num_pairs, config.seed + 1)

  config.train.metric_features = 'mfcc'
  in_mfcc = stages.ensure_statistics(config, str(tmp_path), metric)
  assert (tmp_path / 'statistics.json.stale-config').exists()
  assert in_mfcc['mu_x'] == in_phi['mu_x'] and in_mfcc['mu_y'] != in_phi['mu_y']
  np.testing.assert_allclose([in_mfcc['mu_y'], in_mfcc['sigma_y']], expected, rtol=1e-5)

  config.train.metric_features = 'both'
  both = stages.ensure_statistics(config, str(tmp_path), metric)
  assert (tmp_path / 'statistics.json.stale-config-2').exists()
  assert set(both) == set(losses.STATS_KEYS + losses.MFCC_STATS_KEYS)
  np.testing.assert_allclose([both['mu_y'], both['sigma_y']], [in_phi['mu_y'], in_phi['sigma_y']], rtol=1e-6)
  np.testing.assert_allclose([both['mu_y_mfcc'], both['sigma_y_mfcc']], expected, rtol=1e-5)
  assert stages.ensure_statistics(config, str(tmp_path), metric) == both
  assert not (tmp_path / 'statistics.json.stale-config-3').exists()  # Read back, not set aside again.


def test_a_corrupt_artefact_is_set_aside_so_that_its_stage_runs_again(tmp_path, caplog):
  path = str(tmp_path / 'classifiers' / 'pitch')
  checkpoint.save_artefact(path, {'w': np.arange(5000, dtype=np.float32)})
  like = {'w': np.zeros(5000, np.float32)}
  np.testing.assert_array_equal(stages._restored(path, like)['w'], np.arange(5000))
  test_checkpoint.flip_one_bit(path)
  assert stages._restored(path, like) is None  # The stage reruns.
  assert not os.path.exists(path) and len(glob.glob(f'{path}.corrupt-*')) == 1
  assert f'{path}' in caplog.text and 'the stage runs again' in caplog.text

  stats = str(tmp_path / 'statistics.json')
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0}, checksum=True)
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) == {'mu_x': 1.0, 'sigma_x': 2.0}
  assert stages._read_json(stats, ('mu_x', 'mu_y')) is None  # Incomplete: set aside.
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0}, checksum=True)
  with open(stats) as f:
    text = f.read()
  with open(stats, 'w') as f:
    f.write(text.replace('2.0', '3.0'))
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) is None
  files.write_json(stats, {'mu_x': 1.0, 'sigma_x': 2.0})  # Its checksum key gone: never accepted unverified.
  assert stages._read_json(stats, ('mu_x', 'sigma_x')) is None
  assert sorted(os.listdir(tmp_path)) == [
      'classifiers', 'statistics.json.corrupt-checksum', 'statistics.json.corrupt-checksum-2',
      'statistics.json.corrupt-checksum-3'
  ]


def test_an_artefact_without_its_checksums_is_set_aside(tmp_path):
  """Damaged metadata can read as metadata without checksums: the artefact is not used unverified."""
  path = str(tmp_path / 'audio_embedding')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, {'w': np.arange(10, dtype=np.float32)})  # As save_artefact, but without checksums.
  checkpointer.wait_until_finished()
  assert stages._restored(path, {'w': np.zeros(10, np.float32)}) is None
  assert os.listdir(tmp_path) == ['audio_embedding.corrupt-unchecksummed']


class _SyntheticNotes:
  """Stands for data.inputs.Inputs: the synthetic batch's notes at levels 40 dB apart, with family labels."""

  def __init__(self, config: ml_collections.ConfigDict):
    b = synthetic.batch(config, 32, seed=3)
    level = np.geomspace(0.01, 1.0, 32, dtype=np.float32)[:, None]
    self.audio = b['audio'].reshape(-1, config.audio.length)[:32] * level
    self.family = (np.arange(32) % config_lib.num_families(config)).astype(np.int32)

  def notes(self, split: str) -> dict[str, np.ndarray]:
    assert split == 'train'
    return {'audio': self.audio, 'family': self.family}


@pytest.mark.slow  # Trains the audio embedding (a few steps) twice.
def test_the_pooled_mfcc_scale_keeps_the_mfcc_distances_in_phi_and_the_coefficient_scale_does_not():
  """phi's MFCC half: 'pooled' divides every coefficient by one scale, so its distances are the MFCC means'
  distances times one factor (c0, the level, spreads most, as in those distances); 'coefficient' weighs each coefficient
  alike. Either way the half's mean squared norm over the training notes is 1."""
  config = helpers.tiny_config()
  notes = _SyntheticNotes(config)
  dim = config.model.audio_embedding_dim
  raw = pdist(np.asarray(embedding_lib.mfcc_summary(notes.audio, config), np.float64))
  ratios = {}
  for scale in config_lib.MFCC_SCALES:
    config.audio_embedding.mfcc_scale = scale
    metric = stages._train_audio_embedding(config, notes)  # pylint: disable=protected-access
    half = np.asarray(embedding_lib.phi(metric, notes.audio, config), np.float64)[:, dim:]
    assert np.mean(np.sum(np.square(half), axis=-1)) == pytest.approx(1.0, rel=1e-3)
    ratios[scale] = pdist(half) / raw
    if scale == 'pooled':
      assert np.argmax(np.std(half, axis=0)) == 0  # c0, the level: these notes lie 40 dB apart.
  assert np.ptp(ratios['pooled']) < 1e-3 * np.mean(ratios['pooled'])
  assert np.ptp(ratios['coefficient']) > 0.5 * np.mean(ratios['coefficient'])


def test_family_faces_center_is_the_faces_files_mean_kept_for_resumption(tmp_path):
  config = helpers.tiny_config()
  assert stages.ensure_family_faces_center(config, str(tmp_path)) is None  # '' = the batch's mean.
  rng = np.random.default_rng(0)
  a = rng.normal(size=(7, config.data.embedding_dim)).astype(np.float32)
  config.train.family_marginal_weight, config.train.family_faces_spread = 0.3, 1.2
  config.train.family_faces_center = helpers.write_faces_file(str(tmp_path / 'a.npz'), a)
  config_lib.validate(config)
  center = stages.ensure_family_faces_center(config, str(tmp_path))
  assert center.shape == (config.data.embedding_dim,) and center.dtype == np.float32
  np.testing.assert_allclose(center, a.mean(axis=0), atol=1e-6)
  # A resumed run keeps the mean it started with, even if the file changes under it.
  helpers.write_faces_file(config.train.family_faces_center, a + 1)
  np.testing.assert_array_equal(stages.ensure_family_faces_center(config, str(tmp_path)), center)
  # Another file: the record is set aside and that file's mean read.
  config.train.family_faces_center = helpers.write_faces_file(str(tmp_path / 'b.npz'), a[:3] - 2)
  np.testing.assert_allclose(stages.ensure_family_faces_center(config, str(tmp_path)), a[:3].mean(axis=0) - 2,
                             atol=1e-6)
  assert glob.glob(str(tmp_path / 'family_faces_center.json.stale*'))
  # A corrupt record is set aside and the mean read again.
  with open(tmp_path / 'family_faces_center.json', 'a', encoding='utf-8') as f:
    f.write('x')
  np.testing.assert_allclose(stages.ensure_family_faces_center(config, str(tmp_path)), a[:3].mean(axis=0) - 2,
                             atol=1e-6)
  # Missing, corrupt or of another embedder: an error that names the file, before any step.
  for name, make in (('missing.npz', None), ('corrupt.npz', lambda p: open(p, 'w', encoding='utf-8').write('no')),
                     ('network.npz', lambda p: helpers.write_faces_file(p, a, 'network:0123abcd'))):
    path = str(tmp_path / name)
    if make:
      make(path)
    config.train.family_faces_center = path
    with pytest.raises(photos.PhotoFacesError, match=name) as error:
      stages.ensure_family_faces_center(config, str(tmp_path / name.replace('.npz', '')))
    assert 'takes a folder' not in str(error.value)  # Training's config field, not the evaluation's --photos.
