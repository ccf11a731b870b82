"""End-to-end training on the tiny embedded data: artefacts, resume, bad configs (several processes: test_reliability.py)."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import gan
from face2music_jax import parallel
from face2music_jax import preemption
from face2music_jax import stages
from face2music_jax import train
from face2music_jax import train_step
from face2music_jax import translator as translator_lib
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import photos
from face2music_jax.models import audio_embedding
from face2music_jax.models import discriminator
from face2music_jax.models import generator as generator_lib
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def staged_config(tiny_config, trained_tiny_workdir):
  """The tiny config with a work directory that holds the shared tiny run's stage artefacts (the stages are
  deterministic; conftest's trained_tiny_workdir runs them): these tests train at once."""
  helpers.copy_stage_artefacts(trained_tiny_workdir, tiny_config.workdir)
  return tiny_config


def _stopped_after_step_1_and_resumed_to_2(config, tmp_path):
  """The final state of a run of `config` in a new work directory with its stages, trained to step 1, then resumed
  to step 2."""
  resumed_dir = helpers.copy_stage_artefacts(config.workdir, str(tmp_path / 'resumed'))
  config.workdir = resumed_dir
  config.train.num_steps = 1
  train.train(config, resumed_dir)
  config.train.num_steps = 2
  return train.train(config, resumed_dir)


def _params(state):
  return jax.tree_util.tree_flatten_with_path(gan.to_host((state.g, state.d, state.aux, state.g_opt)))[0]


def test_train_writes_checkpoints_logs_and_samples(tiny_config, trained_tiny_workdir):
  # The shared tiny run (conftest: `train.train` of this config, from nothing, once per test run) is read here.
  w = trained_tiny_workdir
  config = config_lib.load_config(w)
  assert config.train.num_steps == tiny_config.train.num_steps == 4 and config.data_dir == tiny_config.data_dir
  assert sorted(os.listdir(os.path.join(w, 'checkpoints'))) == ['2', '4']
  assert glob.glob(os.path.join(w, 'events.out.tfevents.*'))
  lines = [json.loads(l) for l in open(os.path.join(w, 'metrics.jsonl'))]
  assert [l['step'] for l in lines] == [1, 2, 3, 4]
  assert all(np.isfinite(l['g_loss']) and np.isfinite(l['d_loss']) and np.isfinite(l['metric_loss']) for l in lines)
  wavs = sorted(glob.glob(os.path.join(w, 'samples', 'step_4', '*.wav')))
  # Each sample face at each listening pitch within the tiny config's range (MIDI 48 and 60).
  assert [os.path.basename(p) for p in wavs] == [f'face_{i:02d}_midi{m}.wav' for i in range(2) for m in (48, 60)]
  audio, rate = soundfile.read(wavs[0])
  assert rate == 16000 and audio.shape == (config.audio.length,) and np.abs(audio).max() <= 1.0
  stats = json.load(open(os.path.join(w, 'statistics.json')))
  assert stats['sigma_x'] > 0 and stats['sigma_y'] > 0
  assert json.load(open(os.path.join(w, 'config.json')))['name'] == 'aux'
  # Where the time went, phase by phase, kept beside the run.
  timing = files.read_json(os.path.join(w, train.TIMING_FILE))
  assert list(timing['seconds']) == [
      'data', 'compile train step', 'stage: audio embedding', 'stage: classifiers', 'stage: statistics',
      'init and restore', 'train steps', 'samples', 'checkpoints'
  ]
  assert all(s >= 0 for s in timing['seconds'].values()) and timing['end_step'] == 4


def test_batches_are_a_pure_function_of_the_step_with_a_fresh_sub_batch_per_discriminator_update(tiny_config):
  tiny_config.train.d_steps = 2
  data = inputs_lib.TrainingData(tiny_config)
  batch = data.batch(3)
  b = tiny_config.train.batch_size
  assert batch['audio'].shape == (2, b, tiny_config.audio.length) and batch['embedding'].shape == (2, b, 128)
  assert not np.array_equal(batch['audio'][0], batch['audio'][1])
  again = inputs_lib.TrainingData(tiny_config).batch(3)
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])
  # Sub-batch k of step s is the sampler's batch s * d_steps + k.
  np.testing.assert_array_equal(batch['pitch'][1], data.pitch[data.note_sampler.indices(7)])


def test_stop_and_resume_gives_the_same_parameters_as_an_uninterrupted_run(tiny_config, trained_tiny_workdir, tmp_path):
  straight = tiny_config.copy_and_resolve_references()
  straight.workdir = helpers.copy_stage_artefacts(trained_tiny_workdir, str(tmp_path / 'straight'))
  expected = _params(train.train(straight, straight.workdir))

  resumed = tiny_config.copy_and_resolve_references()
  resumed.workdir = helpers.copy_stage_artefacts(trained_tiny_workdir, str(tmp_path / 'resumed'))
  resumed.train.num_steps = 2
  train.train(resumed, resumed.workdir)
  resumed.train.num_steps = 4
  got = _params(train.train(resumed, resumed.workdir))
  assert [k for k, _ in got] == [k for k, _ in expected]
  for (k, a), (_, b) in zip(got, expected):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(k))
  steps = [json.loads(l)['step'] for l in open(os.path.join(resumed.workdir, 'metrics.jsonl'))]
  assert steps == [1, 2, 3, 4]


def test_bad_config_values_fail_at_start_naming_the_field(tiny_config):
  tiny_config.model.wavegan.dim = -4
  with pytest.raises(config_lib.ConfigError, match='model.wavegan.dim'):
    train.train(tiny_config, tiny_config.workdir)
  tiny_config.model.wavegan.dim = 2
  tiny_config.data.audio_source = 'mp3_folder'
  with pytest.raises(config_lib.ConfigError, match='data.audio_source'):
    train.train(tiny_config, tiny_config.workdir)
  tiny_config.data.audio_source = 'soundfont_notes'
  tiny_config.audio.length = 8000
  with pytest.raises(config_lib.ConfigError, match='audio.length'):
    train.train(tiny_config, tiny_config.workdir)


def test_a_batch_that_does_not_divide_over_the_devices_fails_before_any_stage(tiny_config, monkeypatch):
  tiny_config.train.batch_size = 3
  monkeypatch.setattr(parallel.jax, 'device_count', lambda: 2)
  with pytest.raises(config_lib.ConfigError, match=r'config\.train\.batch_size = 3 is invalid: expected a multiple'):
    train.train(tiny_config, tiny_config.workdir)
  assert not os.path.exists(tiny_config.workdir)


def test_a_missing_faces_file_for_the_family_faces_fails_before_any_stage(tiny_config, tmp_path):
  tiny_config.train.family_marginal_weight, tiny_config.train.family_faces_spread = 0.5, 1.25
  tiny_config.train.family_faces_center = str(tmp_path / 'photo_faces.npz')
  with pytest.raises(photos.PhotoFacesError, match='No faces file .*photo_faces.npz'):
    train.train(tiny_config, tiny_config.workdir)
  assert not os.path.exists(os.path.join(tiny_config.workdir, 'audio_embedding'))


def test_a_checkpoint_from_another_config_fails_clearly(staged_config):
  train.train(staged_config, staged_config.workdir)
  staged_config.model.harmonic.hidden = 8
  staged_config.train.num_steps = 6
  with pytest.raises(Exception, match='another config'):
    train.train(staged_config, staged_config.workdir)


def test_face_space_is_fitted_on_the_training_faces_and_travels_with_the_generator(staged_config):
  """model.harmonic.face_components: the run fits G's face space on all training faces before its first step, keeps
  it through training and in the checkpoint; the generator restored from it holds the same space."""
  staged_config.model.harmonic.face_components = 3
  staged_config.train.num_steps = 1
  state = train.train(staged_config, staged_config.workdir)
  faces = inputs_lib.for_config(staged_config).faces('train')['embedding']
  expected = generator_lib.fit_face_space(faces, 3)
  got = gan.to_host(state.g['face_space'])
  for name in ('mean', 'basis'):
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  _, restored, step = gan.restore_generator(staged_config, staged_config.workdir)
  assert step == 1
  for name in ('mean', 'basis'):
    np.testing.assert_array_equal(gan.to_host(restored['face_space'])[name], expected[name], err_msg=name)
  # An exported bundle carries it: its translator writes the workdir's notes, the same for a face moved off the
  # space, another for a face moved along it.
  bundle = os.path.join(os.path.dirname(staged_config.workdir), 'bundle')
  translator_lib.export_bundle(staged_config.workdir, bundle)
  translator = translator_lib.Translator.load(bundle)
  z = faces[:2]
  midi = [48, 60]  # The tiny model's range.
  notes = translator.generate(z, midi)
  np.testing.assert_array_equal(notes, translator_lib.Translator.load(staged_config.workdir).generate(z, midi))
  residual = (z[0] - expected['mean']) - expected['basis'] @ (expected['basis'].T @ (z[0] - expected['mean']))
  off = residual / np.linalg.norm(residual) * np.linalg.norm(z[1] - z[0])
  np.testing.assert_allclose(translator.generate(z + off, midi), notes, atol=1e-4)
  along = expected['basis'][:, 0] * np.linalg.norm(z[1] - z[0])
  assert np.max(np.abs(translator.generate(z + along, midi) - notes)) > 1e-3


def test_fixed_face_norm_standardises_training_faces_by_all_training_faces_as_translation_does(staged_config):
  """model.harmonic.face_norm 'fixed': the run sets G's face standardisation to the mean and variance of all training
  faces as its projection leaves them, before its first step; training never changes them (with 'batch' it would,
  each batch by its own), so G's notes in training mode are its notes at translation."""
  staged_config.model.harmonic.face_components = 3
  staged_config.model.harmonic.face_norm = 'fixed'
  staged_config.train.num_steps = 2
  state = train.train(staged_config, staged_config.workdir)
  faces = inputs_lib.for_config(staged_config).faces('train')['embedding']
  space = generator_lib.fit_face_space(faces, 3)
  expected = generator_lib.face_norm_statistics(generator_lib.face_statistics(faces), space)
  got = gan.to_host(state.g['batch_stats'])['face_norm']
  for name in ('mean', 'var'):
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  projected = space['mean'] + (faces - space['mean']) @ space['basis'] @ space['basis'].T
  np.testing.assert_allclose(expected['mean'], projected.mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(expected['var'], projected.var(axis=0), rtol=1e-4, atol=1e-9)
  g_vars = gan.to_host(state.g)
  generator = generator_lib.make_generator(staged_config)
  z, pitch = faces[:4], np.zeros(4, np.int32)
  trained, _ = generator.apply(g_vars, z, pitch, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(trained, generator.apply(g_vars, z, pitch, train=False), atol=1e-6)


def test_aux_input_scale_is_fitted_on_the_real_notes_before_the_first_step_and_resumes_exactly(staged_config, tmp_path):
  """train.aux_mfcc_scale = 'coefficient': the run fits A's input scale on phi(y) of its training notes before its
  first step and keeps it through training; a run stopped after step 1 and resumed ends as one run of 2 steps."""
  staged_config.train.aux_mfcc_scale = 'coefficient'
  staged_config.train.num_steps = 2
  straight = train.train(staged_config, staged_config.workdir)
  metric = stages.ensure_audio_embedding(staged_config, staged_config.workdir)
  notes = inputs_lib.for_config(staged_config).notes('train')['audio']
  real_phi = np.asarray(jax.jit(lambda a: audio_embedding.phi(metric, a, staged_config))(notes))
  expected = discriminator.fit_aux_input_scale(real_phi, staged_config.mfcc.n_mfcc)['weight']
  got = gan.to_host(straight.aux['input_scale']['weight'])
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert np.ptp(got[-staged_config.mfcc.n_mfcc:]) > 0.1  # Not the weights A is initialised with.
  resumed = _stopped_after_step_1_and_resumed_to_2(staged_config, tmp_path)
  for (k, a), (_, b) in zip(
      jax.tree_util.tree_flatten_with_path(gan.to_host((straight.aux, straight.g)))[0],
      jax.tree_util.tree_flatten_with_path(gan.to_host((resumed.aux, resumed.g)))[0]):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(k))


def test_the_average_of_g_resumes_exactly_and_is_the_generator_that_evaluation_and_translation_read(
    staged_config, tmp_path):
  """train.g_ema_decay: a run stopped after step 1 and resumed ends with the average of one run of 2 steps; the
  generator restored from the checkpoint (evaluation, translation, export) is the average, not the live G."""
  staged_config.train.g_ema_decay = 0.5
  staged_config.train.num_steps = 2
  straight = train.train(staged_config, staged_config.workdir)
  _, restored, step = gan.restore_generator(staged_config, staged_config.workdir)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, gan.to_host(restored), gan.to_host(straight.g_ema))
  gap = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), gan.to_host(restored['params']),
                     gan.to_host(straight.g['params']))
  assert max(jax.tree.leaves(gap)) > 1e-6
  resumed = _stopped_after_step_1_and_resumed_to_2(staged_config, tmp_path)
  jax.tree.map(np.testing.assert_array_equal, gan.to_host((resumed.g_ema, resumed.g)),
               gan.to_host((straight.g_ema, straight.g)))


def _nan_metric_loss(*args, **kwargs):
  del args, kwargs
  return jax.numpy.float32(np.nan)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(staged_config, monkeypatch):
  staged_config.train.num_steps = 2
  train.train(staged_config, staged_config.workdir)
  monkeypatch.setattr(train_step.losses, 'metric_preservation_loss', _nan_metric_loss)
  staged_config.train.num_steps = 4
  with pytest.raises(train.NonFiniteError, match=r'step 3.*metric_loss'):
    train.train(staged_config, staged_config.workdir)
  assert sorted(os.listdir(os.path.join(staged_config.workdir, 'checkpoints'))) == ['2']


def test_non_finite_updates_are_skipped_and_counted_when_configured(staged_config, monkeypatch):
  monkeypatch.setattr(train_step.losses, 'metric_preservation_loss', _nan_metric_loss)
  staged_config.train.nonfinite = 'skip'
  staged_config.train.num_steps = 2
  state = train.train(staged_config, staged_config.workdir)
  assert int(gan.to_host(state.step)) == 2 and int(gan.to_host(state.skipped)) == 2
  fresh = jax.jit(gan.Models(staged_config).init)(jax.random.key(staged_config.seed))
  # As initialised, but for G's face space, which the run fits on its training faces before the first step.
  fresh = fresh.replace(g={**fresh.g, 'face_space': state.g['face_space']})
  for (k, a), (_, b) in zip(_params(state), _params(fresh)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(k))
  lines = [json.loads(l) for l in open(os.path.join(staged_config.workdir, 'metrics.jsonl'))]
  assert [l['skipped'] for l in lines] == [1.0, 2.0]


def test_sigterm_saves_a_checkpoint_before_exit_and_the_rerun_resumes(tiny_config, tiny_exported, trained_tiny_workdir,
                                                                      tmp_path):
  workdir = helpers.copy_stage_artefacts(trained_tiny_workdir, str(tmp_path / 'preempted'))
  args = [
      sys.executable, 'run_train.py', '--config=configs/aux.py:tiny', f'--workdir={workdir}',
      f'--config.data.exported={tiny_exported}', '--config.train.num_steps=100000',
      '--config.train.checkpoint_every=100000'
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == preemption.EXIT_CODE == 3, out[-3000:]  # Not 0: the run is not finished.
  steps = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert len(steps) == 1 and int(steps[0]) >= 3, steps
  assert f'Stopped: Stopped at step {steps[0]} after SIGTERM' in out
  resumed = subprocess.run(args[:-2] + [f'--config.train.num_steps={int(steps[0]) + 1}'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from the checkpoint at step {steps[0]}' in resumed.stderr
  # What a person watching sees: compilation announced and timed, a progress bar with the rate and the time left.
  assert 'Compiling the train step' in out and 'The first step took' in out
  assert re.search(r'train: .*\d+/100000 \[.*<.*step/s', out), out[-2000:]


def test_a_step_that_cannot_fit_fails_before_the_stages_and_does_not_lock_out_the_corrected_rerun(
    tiny_config, monkeypatch, caplog):
  workdir = tiny_config.workdir
  too_big = tiny_config.copy_and_resolve_references()
  too_big.train.batch_size = 1_000_000  # Not even the metric loss's pair indices fit (int32).
  with pytest.raises(train.MemoryLimitError, match='cannot be built at config.train.batch_size = 1000000'):
    train.train(too_big, workdir)
  with monkeypatch.context() as patch:  # XLA's estimate of the tiny step against a machine of 1 MiB.
    patch.setattr(train, 'available_memory', lambda: (2**20, 'test memory'))
    with pytest.raises(train.MemoryLimitError, match=r'needs about .* GiB .* but there are 0\.0 GiB of test memory'):
      train.train(tiny_config, workdir)
  assert sorted(os.listdir(workdir)) == ['config.json', 'run.json']  # No stage ran.
  state = train.train(tiny_config, workdir)  # The corrected run takes the directory over.
  assert int(gan.to_host(state.step)) == tiny_config.train.num_steps
  longer = tiny_config.copy_and_resolve_references()
  longer.train.num_steps = 2  # Below the checkpoint's step: said, not silently nothing.
  train.train(longer, workdir)
  assert f'at step {tiny_config.train.num_steps}, at or past config.train.num_steps = 2: nothing to train' in caplog.text


def test_family_faces_around_a_photo_domains_mean_are_read_once_and_resume_exactly(staged_config, tmp_path):
  """train.family_faces_center: the run reads the faces file's mean before its first step and keeps it in the work
  directory; a run stopped after step 1 whose faces file then changes resumes with the mean it started with and ends
  as one run of 2 steps. Another mean trains another G."""
  config = staged_config
  config.train.family_marginal_weight, config.train.family_faces_spread = 0.5, 1.25
  faces = np.random.default_rng(0).normal(size=(5, config.data.embedding_dim)).astype(np.float32) + 2
  photos = str(tmp_path / 'photo_faces.npz')
  config.train.family_faces_center = helpers.write_faces_file(photos, faces)
  config.train.num_steps = 2
  straight = train.train(config, config.workdir)
  record = files.read_json(os.path.join(config.workdir, 'family_faces_center.json'), checksum=True)
  assert record['source'] == photos and record['num_faces'] == 5
  np.testing.assert_allclose(record['center'], faces.mean(axis=0), atol=1e-6)
  stages_dir = config.workdir
  config.workdir = helpers.copy_stage_artefacts(stages_dir, str(tmp_path / 'resumed'))
  config.train.num_steps = 1
  train.train(config, config.workdir)
  helpers.write_faces_file(photos, faces - 4)
  config.train.num_steps = 2
  resumed = train.train(config, config.workdir)
  for (k, a), (_, b) in zip(_params(straight), _params(resumed)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(k))
  config.workdir = helpers.copy_stage_artefacts(stages_dir, str(tmp_path / 'other'))
  other = train.train(config, config.workdir)  # The changed file's mean, -2 where the first was +2.
  assert max(float(np.max(np.abs(a - b))) for (_, a), (_, b) in zip(_params(straight), _params(other))) > 1e-4
