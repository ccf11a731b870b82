"""The train step on synthetic data: it learns, and data parallelism does not change the result."""

import os
import subprocess
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from face2music_jax import config_lib
from face2music_jax import gan
from face2music_jax import losses
from face2music_jax import parallel
from face2music_jax import train_step
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models import generator as g_lib
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Setup(NamedTuple):
  """A config's compiled train step (it donates its state: call it on `_fresh(state)`) and its inputs."""
  config: Any
  models: gan.Models
  mesh: jax.sharding.Mesh
  step: Any
  state: Any
  host_batch: dict[str, np.ndarray]
  batch: dict[str, jax.Array]
  metric: Any
  stats: dict[str, jax.Array]
  root: jax.Array


def _setup(config, batch_seed=0, mesh=None) -> _Setup:
  mesh = mesh or parallel.make_mesh()
  models = gan.Models(config)
  root = jax.random.key(config.seed)
  state = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(root)
  host_batch = helpers.synthetic_batch(config, config.train.batch_size, batch_seed)
  stats = {'mu_x': np.float32(1.4), 'sigma_x': np.float32(0.1), 'mu_y': np.float32(0.5), 'sigma_y': np.float32(0.2)}
  if config.train.family_marginal_weight > 0:  # Centroids about the random metric's phi of the batch's notes.
    k, f = len(config_lib.NSYNTH_FAMILIES), embedding_lib.phi_dim(config)
    rng = np.random.default_rng(batch_seed)
    stats.update(family_centroids=rng.normal(size=(k, f)).astype(np.float32),
                 family_present=(np.arange(k) < k - 1).astype(np.float32), family_scale=np.float32(0.5 * np.sqrt(f)))
  if config.train.family_faces_center:  # A photo domain's mean face, away from the batch's (train.py reads it).
    e = config.data.embedding_dim
    stats['family_faces_center'] = np.random.default_rng(batch_seed + 1).normal(size=e).astype(np.float32)
  if config.train.metric_features == 'both':  # Eq. 1's constants in phi's MFCC half.
    stats.update(mu_y_mfcc=np.float32(0.05), sigma_y_mfcc=np.float32(0.02))
  return _Setup(config, models, mesh, train_step.compile_train_step(models, mesh), state, host_batch,
                parallel.global_batch(mesh, host_batch), parallel.replicate(mesh, helpers.random_metric(config)),
                parallel.replicate(mesh, stats), root)


def _fresh(state):
  return jax.tree.map(jnp.copy, state)


def _steps(s: _Setup, num_steps: int):
  state, history = _fresh(s.state), []
  for _ in range(num_steps):
    state, metrics = s.step(state, s.batch, s.metric, s.stats, s.root)
    history.append({k: float(v) for k, v in gan.to_host(metrics).items()})
  return state, history


def _run_steps(config, num_steps, batch_seed=0, mesh=None):
  return _steps(_setup(config, batch_seed, mesh), num_steps)


@pytest.mark.parametrize('name, generator', [('baseline', 'harmonic'), ('metric', 'harmonic'), ('aux', 'harmonic'),
                                             ('aux', 'wavegan')])
def test_each_config_step_runs_with_finite_losses(name, generator):
  """Every config with the product's generator (the tiny size's, as every size's but `paper`), and the WaveGAN."""
  config = helpers.tiny_config(name)
  config.model.generator = generator
  state, history = _run_steps(config, 2)
  assert int(gan.to_host(state.step)) == 2
  for m in history:
    assert m['finite'] == 1.0 and all(np.isfinite(v) for v in m.values())
  assert ('metric_loss' in history[0]) == (name != 'baseline')
  assert ('aux_d_loss' in history[0]) == (name == 'aux')


@pytest.mark.parametrize(
    'metric_pairs, aux_pack, face_spread, face_noise, noise_space, aux_r1, metric_shift, family_weight, '
    'family_spread, family_judged, family_center, family_batch, family_shift, features, share_weight, share_band',
    [('batch', 1, 1.0, 0.0, 'embedding', 0.0, 0.0, 0.0, 0.0, False, False, 0.0, 0.0, 'phi', 0.0, 12),
     ('one_pitch', 2, 1.5, 0.5, 'embedding', 0.0, 0.0, 0.4, 1.3, False, True, 0.0, 0.0, 'mfcc', 1.5, 0),
     ('batch', 2, 1.0, 0.75, 'projection', 0.5, 1.5, 0.7, 0.0, False, False, 0.0, 0.0, 'both', 0.8, 12),
     ('batch', 1, 1.0, 0.0, 'embedding', 0.0, 0.0, 0.5, 1.2, True, False, 0.3, 0.6, 'both', 0.0, 12)])
def test_generator_update_equals_backpropagation_through_a_second_generator_pass(
    metric_pairs, aux_pack, face_spread, face_noise, noise_space, aux_r1, metric_shift, family_weight, family_spread,
    family_judged, family_center, family_batch, family_shift, features, share_weight, share_band):
  """The step reuses the D update's G forward pass; the gradient must be that of the plain G objective. With
  metric_pairs 'one_pitch', Eq. 1 compares the faces' notes at one pitch drawn from the batch; with aux_pack 2, A
  judges pairs of notes, conditioned on their pitches; with face_spread, G and Eq. 1 see each face moved away from
  the batch's mean, with face_noise, each face with isotropic noise added: in all dimensions ('embedding') or only
  within G's face space ('projection'). With aux_r1, A's gradient is that of its hinge loss plus the R1 penalty at
  the real notes' phi, per pack. With metric_shift, Eq. 1 asks for notes that many standard deviations farther
  apart. With family_weight, G's objective adds the family-marginal loss against the real notes of its sub-batch, on
  G's notes of the batch's faces or, with family_spread, of as many faces drawn from a Gaussian with the batch's mean
  and family_spread^2 times its covariance, through G on its running statistics (with family_center, around a photo
  domain's mean face instead of the batch's); with family_judged, D's adversarial loss and pitch head judge those
  notes too; with family_batch, the loss on the batch's notes is added at that weight; with family_shift, those faces
  are moved together by one offset drawn with family_shift^2 times the batch's covariance.
  With features 'mfcc', Eq. 1 measures the notes by phi's MFCC half; with 'both', by phi and by that half. With
  share_weight, G's objective adds the matching of the notes' fundamental shares to the real notes', over the whole
  sub-batch (share_band 0) or within octaves."""
  config = helpers.tiny_config('aux')
  config.train.metric_pairs, config.model.aux_pack, config.train.face_spread = metric_pairs, aux_pack, face_spread
  config.train.face_noise, config.train.face_noise_space = face_noise, noise_space
  config.train.aux_r1_weight, config.train.metric_shift = aux_r1, metric_shift
  config.train.family_marginal_weight, config.train.family_faces_spread = family_weight, family_spread
  config.train.family_faces_judged = family_judged
  config.train.family_faces_center = 'photo_faces.npz' if family_center else ''
  config.train.family_batch_weight = family_batch
  config.train.family_faces_shift = family_shift
  config.train.metric_features = features
  config.train.share_matching_weight, config.train.share_matching_band = share_weight, share_band
  config.model.aux_pitch_conditional = aux_pack > 1  # Packs of notes at their pitches.
  assert config.train.pitch_classification_weight > 0  # The default: D's pitch head is part of G's objective.
  # The compiled step and inputs of test_each_config_step_runs_with_finite_losses[aux-harmonic], whose compilation
  # the persistent cache shares.
  setup = _setup(config)
  models, state, batch, metric, stats, root = (setup.models, setup.state, setup.host_batch, setup.metric, setup.stats,
                                               setup.root)
  assert ('pitch_projection' in state.aux['params']) == config.model.aux_pitch_conditional
  if noise_space == 'projection':  # A face space fitted on the batch's faces, as training fits it on all of them.
    space = g_lib.fit_face_space(batch['embedding'].reshape(-1, batch['embedding'].shape[-1]),
                                 config.model.harmonic.face_components)
    state = state.replace(g={**state.g, 'face_space': parallel.replicate(setup.mesh, space)})
  new, metrics = setup.step(_fresh(state), setup.batch, metric, stats, root)
  z, pitch = batch['embedding'][-1], batch['pitch'][-1]
  assert ('aux_r1' in metrics) == (aux_r1 > 0)
  assert ('family_marginal_loss' in metrics) == (family_weight > 0)
  assert ('g_adv_loss_wide' in metrics) == family_judged
  assert ('family_marginal_loss_batch' in metrics) == (family_batch > 0)
  assert ('share_matching_loss' in metrics) == (share_weight > 0)
  k_g = jax.random.fold_in(jax.random.fold_in(root, 0), config.train.d_steps)

  step_key = jax.random.fold_in(root, 0)
  shared = pitch[jax.random.randint(jax.random.fold_in(step_key, config.train.d_steps + 1), (), 0, len(pitch))]
  if face_spread > 1:
    spread = jax.random.uniform(jax.random.fold_in(step_key, config.train.d_steps + 2), (len(z), 1), minval=1.0,
                                maxval=face_spread)
    z = z.mean(axis=0, keepdims=True) + spread * (z - z.mean(axis=0, keepdims=True))
  noise_key = jax.random.fold_in(step_key, config.train.d_steps + 3)
  if face_noise > 0 and noise_space == 'embedding':
    z = z + face_noise * np.sqrt(np.mean(np.var(np.asarray(z), axis=0))) * jax.random.normal(noise_key, z.shape)
  elif face_noise > 0:
    basis = np.asarray(state.g['face_space']['basis'])
    assert basis.shape == (z.shape[-1], config.model.harmonic.face_components)
    noise = np.asarray(jax.random.normal(noise_key, (len(z), basis.shape[1]))) @ basis.T
    z = z + face_noise * np.sqrt(np.mean(np.var(np.asarray(z) @ basis, axis=0))) * noise
    # The noise lies within G's face space: the projection G applies keeps all of it.
    np.testing.assert_allclose(noise @ basis @ basis.T, noise, atol=1e-5)

  if family_spread > 0:  # The family loss's faces: the batch's mean plus mixtures of its centred faces.
    centred = np.asarray(z) - np.asarray(z).mean(axis=0, keepdims=True)
    mix = np.asarray(jax.random.normal(jax.random.fold_in(step_key, config.train.d_steps + 4), (len(z), len(z))))
    center = np.asarray(stats['family_faces_center']) if family_center else np.asarray(z).mean(axis=0)
    assert family_center == ('family_faces_center' in stats)
    wide_z = center + family_spread * mix @ centred / np.sqrt(len(z) - 1.0)
    if family_shift > 0:  # One offset for all of them, a mixture of the batch's centred faces.
      offset = np.asarray(jax.random.normal(jax.random.fold_in(step_key, config.train.d_steps + 5), (1, len(z))))
      wide_z = wide_z + family_shift * offset @ centred / np.sqrt(len(z) - 1.0)
  else:
    wide_z = None

  if aux_r1 > 0:  # A's update (one D update a step): its hinge loss on the last batch plus R1, from scratch.
    assert config.train.d_steps == 1
    real_phi = embedding_lib.phi(metric, batch['audio'][-1], config)
    fake_phi = embedding_lib.phi(metric, models.generate(state.g, z, pitch, train=True)[0], config)

    def r1(a_params):  # Per pack: a pack's squared gradient norm is the sum over its notes.
      grads = jax.grad(lambda x: jnp.sum(models.aux.apply({'params': a_params}, x, pitch)))(real_phi)
      return jnp.sum(grads**2) / (len(pitch) // aux_pack)

    def a_objective(a_params):
      logits = models.aux.apply({'params': a_params}, jnp.concatenate([real_phi, fake_phi]),
                                jnp.concatenate([pitch, pitch]))
      return losses.hinge_d_loss(*jnp.split(logits, 2)) + aux_r1 * r1(a_params)

    np.testing.assert_allclose(float(metrics['aux_r1']), float(r1(state.aux['params'])), rtol=1e-4)
    a_grads = jax.jit(jax.grad(a_objective))(state.aux['params'])
    np.testing.assert_allclose(float(metrics['aux_grad_norm']), float(optax.tree.norm(a_grads)), rtol=1e-4)
    assert float(metrics['aux_r1']) > 0

  def reference(g_params):  # G's objective against the updated discriminators (new.d, new.aux), from scratch.
    fake, _ = models.generate({**state.g, 'params': g_params}, z, pitch, train=True)
    logits, pitch_logits, _ = models.discriminate(new.d, fake, pitch, k_g)
    phi = embedding_lib.phi(metric, fake, config)
    if metric_pairs == 'one_pitch':
      at_one_pitch, _ = models.generate({**state.g, 'params': g_params}, z, jnp.full_like(pitch, shared), train=True)
      metric_phi = embedding_lib.phi(metric, at_one_pitch, config)
    else:
      metric_phi = phi
    if wide_z is not None:  # On G's running statistics, as a new face's note.
      wide, _ = models.generate({**state.g, 'params': g_params}, wide_z, pitch, train=False)
      family_phi = embedding_lib.phi(metric, wide, config)
    else:
      family_phi = phi
    judged = 0.0
    if family_judged:  # D (after its update) judges the wide faces' notes, with its own phase-shuffle key.
      wide_logits, wide_pitch_logits, _ = models.discriminate(new.d, wide, pitch, jax.random.fold_in(k_g, 1))
      judged = (losses.hinge_g_loss(wide_logits) +
                config.train.pitch_classification_weight * losses.pitch_classification_loss(wide_pitch_logits, pitch))
    t, n = config.train, config.mfcc.n_mfcc
    mfcc_stats = dict(stats, mu_y=stats.get('mu_y_mfcc'), sigma_y=stats.get('sigma_y_mfcc'))
    eq1 = {
        'phi':
            lambda: losses.metric_preservation_loss(z, metric_phi, stats, metric_shift),
        'mfcc':
            lambda: losses.metric_preservation_loss(z, metric_phi[:, -n:], stats, metric_shift),
        'both':
            lambda:
            (losses.metric_preservation_loss(z, metric_phi, stats, metric_shift) + losses.metric_preservation_loss(
                z, metric_phi[:, -n:], mfcc_stats, metric_shift)),
    }[features]()
    return (
        losses.hinge_g_loss(logits) + t.metric_weight * eq1 +
        t.aux_weight * losses.hinge_g_loss(models.aux.apply(new.aux, phi, pitch)) +
        t.pitch_classification_weight * losses.pitch_classification_loss(pitch_logits, pitch) +
        (t.family_marginal_weight * losses.family_marginal_loss(embedding_lib.phi(metric, batch['audio'][-1], config),
                                                                family_phi, stats) if family_weight else 0.0) +
        (family_batch * losses.family_marginal_loss(embedding_lib.phi(metric, batch['audio'][-1], config), phi, stats)
         if family_batch else 0.0) +
        (t.share_matching_weight * share_matching(batch['audio'][-1], fake) if share_weight else 0.0) + judged)

  midi = np.asarray(pitch) + config.audio.pitch_min
  f0 = jnp.asarray(440.0 * 2.0**((midi - 69) / 12), jnp.float32)
  shares_of = lambda x: losses.fundamental_shares(x, f0, sample_rate=config.audio.sample_rate)
  # The notes sorted by (octave or none, share) as numpy sorts them, at G's parameters: the gradient through a sort
  # is that through the fixed order it picks there.
  groups = midi // share_band if share_band else np.zeros_like(midi)
  real_shares = np.asarray(shares_of(batch['audio'][-1]))
  fake_shares = np.asarray(shares_of(models.generate(state.g, z, pitch, train=True)[0]))
  real_order, fake_order = (np.lexsort((x, groups)) for x in (real_shares, fake_shares))

  def share_matching(real, fake):
    return jnp.mean(jnp.abs(shares_of(fake)[fake_order] - real_shares[real_order]))

  loss, grads = jax.jit(jax.value_and_grad(reference))(state.g['params'])
  np.testing.assert_allclose(float(metrics['g_loss']), float(loss), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['g_grad_norm']), float(optax.tree.norm(grads)), rtol=1e-4)
  assert float(optax.tree.norm(grads)) > 0


def _variant_config():
  """The aux config with every non-default option of the step at once: WGAN-GP, two D updates per step, D's
  pitch head at weight 1, a metric-loss warm-up and A conditioned on the pitch (its gradient penalty at the notes'
  pitches). The tests below share its one compiled step (50 s here each)."""
  config = helpers.tiny_config('aux')
  config.train.loss = 'wgan-gp'
  config.model.aux_pitch_conditional = True
  config.train.d_steps = 2
  config.train.pitch_classification_weight = 1.0
  config.train.metric_warmup_steps = 10
  return config


@pytest.fixture(scope='module')
def variant() -> _Setup:
  return _setup(_variant_config())


def test_wgan_gp_is_selectable_and_penalises_both_critics(variant):
  assert 'pitch_projection' in variant.state.aux['params']  # The conditional A.
  _, history = _steps(variant, 2)
  assert all(m['finite'] == 1.0 and m['gradient_penalty'] > 0 and m['aux_gradient_penalty'] > 0 for m in history)


def test_pitch_classification_and_metric_warmup_are_selectable(variant):
  config = variant.config
  _, history = _steps(variant, 2)
  for m in history:
    assert m['finite'] == 1.0 and m['d_pitch_loss'] > 0 and m['g_pitch_loss'] > 0
  # With 13 pitch classes an untrained head is near chance: cross-entropy about ln 13.
  assert abs(history[0]['d_pitch_loss'] - np.log(13)) < 1.0
  # The metric loss enters G's loss with weight 1/10 at the first step (warm-up), so g_loss is the adversarial
  # losses plus a tenth of it (and the `aux` config's family-marginal loss at its weight).
  m = history[0]
  assert ('family_marginal_loss' in m) == (config.train.family_marginal_weight > 0)
  expected = (m['g_adv_loss'] + config.train.pitch_classification_weight * m['g_pitch_loss'] + 0.1 * m['metric_loss'] +
              config.train.aux_weight * m['aux_g_loss'] +
              config.train.family_marginal_weight * m.get('family_marginal_loss', 0.0))
  assert m['g_loss'] == pytest.approx(expected, rel=1e-5)


def test_each_discriminator_update_sees_its_own_sub_batch(variant):
  """With d_steps = 2 the step takes two sub-batches: changing the real notes of either changes D's update."""
  config, batch = variant.config, variant.host_batch
  assert batch['audio'].shape == (2, config.train.batch_size, config.audio.length)
  assert not np.array_equal(batch['audio'][0], batch['audio'][1])

  def d_params(b):
    v = variant
    return gan.to_host(
        v.step(_fresh(v.state), parallel.global_batch(v.mesh, b), v.metric, v.stats, v.root)[0].d['params'])

  reference = d_params(batch)
  for k in range(2):
    changed = {**batch, 'audio': batch['audio'].copy()}
    changed['audio'][k] = changed['audio'][k][::-1]
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), reference, d_params(changed))
    assert max(jax.tree.leaves(diff)) > 1e-6, k


def test_the_average_of_g_follows_its_parameters_with_the_ramped_decay_and_leaves_training_as_it_was():
  """train.g_ema_decay: after each step g_ema's parameters are the decayed average of G's (the decay ramped up as
  min(decay, (1 + t) / (10 + t))), its other collections G's; the live parameters are those of a run without it."""
  config = helpers.tiny_config('aux')
  plain, _ = _run_steps(config, 3)
  assert plain.g_ema == {}
  config.train.g_ema_decay = 0.2  # Below the ramp's (1 + t) / (10 + t) from t = 2 on: both branches are exercised.
  setup = _setup(config)
  state, expected = _fresh(setup.state), gan.to_host(setup.state.g['params'])
  for t in range(3):
    state, _ = setup.step(state, setup.batch, setup.metric, setup.stats, setup.root)
    decay = min(0.2, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, p, d=decay: d * e + (1 - d) * p, expected, gan.to_host(state.g['params']))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), gan.to_host(state.g_ema['params']),
               expected)
  assert sorted(state.g_ema) == sorted(state.g)
  for name in (n for n in state.g if n != 'params'):
    jax.tree.map(np.testing.assert_array_equal, gan.to_host(state.g_ema[name]), gan.to_host(state.g[name]))
  # Averaging changes nothing that training computes.
  jax.tree.map(np.testing.assert_array_equal, gan.to_host((state.g, state.d, state.aux)),
               gan.to_host((plain.g, plain.d, plain.aux)))
  gap = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), gan.to_host(state.g_ema['params']),
                     gan.to_host(state.g['params']))
  assert max(jax.tree.leaves(gap)) > 1e-6  # The average is not the live generator.


def test_train_step_lowers_the_metric_loss_on_a_fixed_batch():
  config = helpers.tiny_config('metric')
  config.train.g_lr = 1e-3
  _, history = _run_steps(config, 150)
  first = np.mean([m['metric_loss'] for m in history[:10]])
  last = np.mean([m['metric_loss'] for m in history[-10:]])
  # The harmonic generator (the tiny size's) reaches 0.63 of the first loss here (the WaveGAN, freer, 0.5): it can
  # only move the timbre, not write any waveform.
  assert last < 0.75 * first, (first, last)


SCRIPT = r"""
import sys, numpy as np, jax
sys.path.insert(0, {root!r})
from tests import test_train_step, helpers
from face2music_jax import gan
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models import generator as g_lib

config = helpers.tiny_config({name!r})
# Adam's first updates are lr * g / (|g| + eps): with the default eps a gradient element that is ~0 up to rounding
# (it differs in the last bits between 1 and 8 devices) moves by +-lr. A larger eps keeps the update continuous
# in g, so the comparison measures the sharded step's numerics rather than Adam's sign amplification. With the
# metric loss, the MFCC's log power of the near-silent initial notes amplifies summation-order differences of the
# gradient (seen: 1e-3 let 20 of 32768 generator weights differ by 2e-5), hence 1e-2.
config.train.adam_eps = 1e-2
state, history = test_train_step._run_steps(config, 2)
leaves = jax.tree_util.tree_flatten_with_path(gan.to_host((state.g, state.d, state.aux)))[0]
losses = {{'loss_' + k: v for k, v in history[0].items()}}
np.savez({out!r}, **{{jax.tree_util.keystr(k): v for k, v in leaves}}, **losses, devices=jax.device_count())
"""


# The aux step holds every loss of the other configs (adversarial, pitch head, metric preservation) and A's.
@pytest.mark.parametrize('name', ['aux'])
def test_one_device_and_eight_devices_give_the_same_parameters(tmp_path, name):
  results = {}
  for n in (1, 8):
    out = str(tmp_path / f'params_{n}.npz')
    env = dict(os.environ, XLA_FLAGS=helpers.xla_flags(f'--xla_force_host_platform_device_count={n}'),
               JAX_PLATFORMS='cpu')
    subprocess.run([sys.executable, '-c', SCRIPT.format(root=ROOT, out=out, name=name)], check=True, env=env, cwd=ROOT,
                   timeout=600)
    results[n] = dict(np.load(out))
  assert int(results[1].pop('devices')) == 1 and int(results[8].pop('devices')) == 8
  assert results[1].keys() == results[8].keys() and len(results[1]) > 10
  config = helpers.tiny_config(name)
  initial = gan.to_host(jax.jit(gan.Models(config).init)(jax.random.key(config.seed)))
  initial = {
      jax.tree_util.keystr(k): v
      for k, v in jax.tree_util.tree_flatten_with_path((initial.g, initial.d, initial.aux))[0]
  }
  for k in results[1]:
    if k.startswith('loss_'):
      # The first step's losses, before any update; the MFCC's log power of near-silent initial outputs makes
      # them (and above all the gradient norms, not compared) sensitive to summation order.
      if 'grad_norm' not in k:
        np.testing.assert_allclose(results[8][k], results[1][k], rtol=1e-4, err_msg=k)
    else:
      # The computation cannot be exact across device counts: the gradients are sums in another order, and the
      # steps amplify a difference in the last bits of a gradient element near 0 into a weight difference of up to
      # lr * delta_g / eps per step (seen: 1.2e-5, 2 of 32768 elements, where the weights moved by ~2e-4). The
      # bound is a quarter of the largest move of the leaf's weights over the two steps: a fault of the sharded
      # step (a gradient not averaged over the devices, a batch split wrongly) moves them by the order of the
      # update itself. Leaves the steps do not move must agree to rounding.
      moved = float(np.abs(results[1][k] - initial[k]).max())
      np.testing.assert_allclose(results[8][k], results[1][k], atol=0.25 * moved + 1e-6, rtol=0, err_msg=k)


@pytest.mark.skipif(jax.device_count() < 2, reason='needs several devices (an accelerator host; the CPU variant is '
                    'the test above)')
def test_all_devices_and_one_device_give_the_same_parameters():
  """The data-parallel step on this host's real devices (scripts/device_check.sh runs it on accelerators)."""
  config = helpers.tiny_config('aux')
  config.train.adam_eps = 1e-2  # As in SCRIPT above: Adam's sign amplification of gradients ~0 up to rounding.
  config.train.batch_size = 8 * jax.device_count()
  one = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
  results = [gan.to_host((s.g, s.d, s.aux)) for s, _ in (_run_steps(config, 2, mesh=one), _run_steps(config, 2))]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4), *results)
