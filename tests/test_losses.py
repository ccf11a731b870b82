"""Losses against direct, loop-based numpy definitions."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax import losses
from face2music_jax import synthetic
from face2music_jax import train
from face2music_jax.models import audio_embedding as embedding_lib
from tests import helpers

# The losses jitted, as the train step calls them: one compilation per shape instead of one per operation of an
# eager call (about 45 per call of the metric loss, 4 s a test here).
metric_preservation_loss = jax.jit(losses.metric_preservation_loss)
triplet_loss = jax.jit(losses.triplet_loss, static_argnums=(2, 3))


def _metric_loss_loops(f, a, stats, shift=0.0):
  total, pairs = 0.0, 0
  for i in range(len(f)):
    for j in range(i + 1, len(f)):
      dx = np.linalg.norm(f[i] - f[j])
      dy = np.linalg.norm(a[i] - a[j])
      total += abs((dx - stats['mu_x']) / stats['sigma_x'] + shift - (dy - stats['mu_y']) / stats['sigma_y'])
      pairs += 1
  return total / pairs


@pytest.mark.parametrize('batch, shift', [(2, 0.0), (7, 0.0), (16, 0.0), (7, 1.5)])
def test_metric_preservation_loss_matches_double_loop(batch, shift):
  rng = np.random.default_rng(batch)
  f = rng.normal(size=(batch, 12)).astype(np.float32)
  a = rng.normal(size=(batch, 5)).astype(np.float32) * 3
  stats = {'mu_x': 4.5, 'sigma_x': 0.7, 'mu_y': 7.0, 'sigma_y': 2.5}
  got = metric_preservation_loss(jnp.asarray(f), jnp.asarray(a), stats, shift)
  np.testing.assert_allclose(float(got), _metric_loss_loops(f, a, stats, shift), rtol=1e-5)


def test_metric_preservation_loss_is_zero_for_matching_geometry_and_has_finite_gradient():
  rng = np.random.default_rng(0)
  f = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  stats = {'mu_x': 1.0, 'sigma_x': 2.0, 'mu_y': 3.0, 'sigma_y': 6.0}
  # Audio distances = 3 * face distances: standardised, they agree exactly.
  assert float(metric_preservation_loss(f, 3.0 * f, stats)) < 1e-5
  duplicate = f.at[1].set(f[0])  # A zero distance must not give NaN gradients.
  g = jax.jit(jax.grad(lambda y: metric_preservation_loss(f, y, stats)))(duplicate)
  assert np.all(np.isfinite(g))


def test_eq1_in_phi_in_its_mfcc_half_or_both_is_the_loops_loss_of_those_features():
  """metric_features 'mfcc' measures the notes by phi's last n_mfcc features alone, with stats' mu_y and sigma_y;
  'both' adds Eq. 1 in phi to Eq. 1 in that half with mu_y_mfcc and sigma_y_mfcc; phi and its MFCC half are asked
  for different notes, so the three differ."""
  rng = np.random.default_rng(3)
  f = rng.normal(size=(9, 12)).astype(np.float32)
  phi = rng.normal(size=(9, 7)).astype(np.float32) * np.array([1, 1, 1, 1, 4, 0.5, 2], np.float32)
  stats = {'mu_x': 4.5, 'sigma_x': 0.7, 'mu_y': 5.0, 'sigma_y': 2.5, 'mu_y_mfcc': 3.0, 'sigma_y_mfcc': 1.5}
  mfcc_stats = dict(stats, mu_y=3.0, sigma_y=1.5)
  metric_losses = jax.jit(losses.metric_losses, static_argnums=(3, 4))
  in_phi = metric_losses(f, phi, stats, 'phi', 3)
  in_mfcc = metric_losses(f, phi, stats, 'mfcc', 3)
  both = metric_losses(f, phi, stats, 'both', 3)
  assert set(in_phi) == set(in_mfcc) == {'metric_loss'}
  np.testing.assert_allclose(float(in_phi['metric_loss']), _metric_loss_loops(f, phi, stats), rtol=1e-5)
  np.testing.assert_allclose(float(in_mfcc['metric_loss']), _metric_loss_loops(f, phi[:, 4:], stats), rtol=1e-5)
  np.testing.assert_allclose(float(both['metric_loss_phi']), _metric_loss_loops(f, phi, stats), rtol=1e-5)
  np.testing.assert_allclose(float(both['metric_loss_mfcc']), _metric_loss_loops(f, phi[:, 4:], mfcc_stats), rtol=1e-5)
  np.testing.assert_allclose(float(both['metric_loss']), float(both['metric_loss_phi'] + both['metric_loss_mfcc']),
                             rtol=1e-6)
  assert len({round(float(x['metric_loss']), 4) for x in (in_phi, in_mfcc, both)}) == 3
  with pytest.raises(ValueError, match="got 'conv'"):
    losses.metric_losses(f, phi, stats, 'conv', 3)


def _families(present=(1, 1, 1, 0)):
  centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], np.float32)
  return {'family_centroids': centroids, 'family_present': np.asarray(present, np.float32), 'family_scale': 4.0}


def test_family_marginal_loss_is_the_kl_divergence_of_the_batches_mean_assignments():
  """Against a numpy definition; zero for translations spread as the real notes are; an absent family takes no
  probability (finite with it); a batch of translations all of one family costs more the more families the real
  notes of the batch hold, and its gradient moves them towards the families they miss."""
  families = _families()
  rng = np.random.default_rng(0)
  real = np.concatenate([families['family_centroids'][k] + rng.normal(size=(4, 2)) for k in range(3)])
  fake = np.repeat(families['family_centroids'][:1], 12, axis=0) + rng.normal(size=(12, 2))
  loss = jax.jit(losses.family_marginal_loss)

  def numpy_loss(r, f, floor=1e-6):

    def mean(x):
      logits = -np.sum((x[:, None] - families['family_centroids'][None, :3])**2, -1) / (2 * 4.0**2)
      p = np.exp(logits - logits.max(1, keepdims=True))
      return (1 - floor) * (p / p.sum(1, keepdims=True)).mean(0) + floor / 3

    m_r, m_f = mean(r), mean(f)
    return np.sum(m_r * np.log(m_r / m_f))

  np.testing.assert_allclose(float(loss(real, fake, families)), numpy_loss(real, fake), rtol=1e-4)
  assert float(loss(real, fake, families)) > 0.3  # The fakes miss two of three families.
  assert abs(float(loss(real, real, families))) < 1e-6
  probs = losses.family_posteriors(jnp.asarray(real), families['family_centroids'], families['family_present'], 4.0)
  assert np.all(np.asarray(probs)[:, 3] == 0) and np.allclose(np.asarray(probs).sum(1), 1, atol=1e-6)
  one_family = float(loss(real[:4], fake, families))  # Real notes of family 0 alone: little to miss.
  assert one_family < 0.05
  grad = np.asarray(jax.jit(jax.grad(lambda f: losses.family_marginal_loss(real, f, families)))(fake))
  assert np.all(np.isfinite(grad))
  moved = fake - 0.5 * grad / np.abs(grad).max()  # A step against the gradient: the fakes leave family 0's centre.
  assert float(loss(real, moved, families)) < float(loss(real, fake, families))


def test_family_statistics_are_the_real_notes_centroids_in_phi_with_a_calibrated_scale():
  """Centroids are the mean phi(y) of each family's notes (zeros, marked absent, for families without notes); the
  scale maximises the notes' likelihood of their own families (better than a scale a quarter off either way); one
  family alone is an error."""
  config = helpers.tiny_config('aux')
  metric = helpers.random_metric(config)
  rng = np.random.default_rng(0)
  family = np.repeat([0, 3, 5], 6)
  # Families that differ a little in level: they overlap in phi, so the likelihood peaks at a finite scale.
  audio = (rng.normal(size=(len(family), config.audio.length)) * (1 + 0.05 * family[:, None])).astype(np.float32) * 0.01
  stats = train.family_statistics(config, metric, {'audio': audio, 'family': family})
  phi = np.asarray(jax.jit(lambda a: embedding_lib.phi(metric, a, config))(audio))
  assert stats['family_centroids'].shape == (len(config_lib.NSYNTH_FAMILIES), phi.shape[1])
  np.testing.assert_array_equal(np.flatnonzero(stats['family_present']), [0, 3, 5])
  for k in (0, 3, 5):
    np.testing.assert_allclose(stats['family_centroids'][k], phi[family == k].mean(0), rtol=1e-4, atol=1e-5)
  assert not np.any(stats['family_centroids'][[1, 2, 4]])

  def log_likelihood(scale):
    p = losses.family_posteriors(jnp.asarray(phi), stats['family_centroids'], stats['family_present'], scale)
    return float(jnp.mean(jnp.log(p[np.arange(len(family)), family])))

  best = log_likelihood(stats['family_scale'])
  assert best > log_likelihood(0.75 * stats['family_scale']) and best > log_likelihood(1.25 * stats['family_scale'])
  with pytest.raises(ValueError, match='at least 2 families'):
    train.family_statistics(config, metric, {'audio': audio[:6], 'family': family[:6]})


def test_metric_shift_asks_for_notes_farther_apart_by_that_many_real_standard_deviations():
  """Two notes shift * sigma_y farther apart than the faces' standardised distance says meet the shifted Eq. 1
  exactly and miss the paper's by shift; over a batch, the shift moves the loss's minimum to notes farther apart."""
  rng = np.random.default_rng(1)
  f = rng.normal(size=(6, 4))
  stats = {'mu_x': 1.0, 'sigma_x': 2.0, 'mu_y': 3.0, 'sigma_y': 6.0}
  f2 = f[:2]
  dx = np.linalg.norm(f2[0] - f2[1])
  shift = 0.75
  dy = stats['mu_y'] + stats['sigma_y'] * ((dx - stats['mu_x']) / stats['sigma_x'] + shift)
  notes = np.array([[0.0], [dy]])
  f2, notes = jnp.asarray(f2, jnp.float32), jnp.asarray(notes, jnp.float32)
  assert float(metric_preservation_loss(f2, notes, stats, shift)) < 1e-5
  np.testing.assert_allclose(float(metric_preservation_loss(f2, notes, stats)), shift, rtol=1e-5)
  # Notes at 3x the faces meet the paper's Eq. 1 exactly (the standardised distances agree); with the shift, notes
  # farther apart do better.
  f6 = jnp.asarray(f, jnp.float32)
  near = metric_preservation_loss(f6, 3.0 * f6, stats, shift)
  far = metric_preservation_loss(f6, 3.0 * f6 * (1 + 0.2), stats, shift)
  assert float(far) < float(near)


def _triplet_loops(emb, labels, margin, mining):
  d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
  n = len(labels)
  if mining == 'batch_hard':
    vals = []
    for a in range(n):
      pos = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
      neg = [d[a, k] for k in range(n) if labels[k] != labels[a]]
      if pos and neg:
        vals.append(max(0.0, max(pos) - min(neg) + margin))
    return np.mean(vals)
  vals = []
  for a, p in itertools.permutations(range(n), 2):
    if labels[a] != labels[p]:
      continue
    neg = [d[a, k] for k in range(n) if labels[k] != labels[a]]
    semi = [x for x in neg if x > d[a, p]]
    chosen = min(semi) if semi else max(neg)
    vals.append(max(0.0, d[a, p] - chosen + margin))
  return np.mean(vals)


@pytest.mark.parametrize('mining', ['batch_hard', 'semi_hard'])
def test_triplet_loss_matches_loops(mining):
  rng = np.random.default_rng(1)
  emb = rng.normal(size=(12, 6)).astype(np.float32)
  labels = rng.integers(0, 3, size=12)
  got = triplet_loss(jnp.asarray(emb), jnp.asarray(labels), 0.5, mining)
  np.testing.assert_allclose(float(got), _triplet_loops(emb, labels, 0.5, mining), rtol=1e-5)


def test_triplet_loss_zero_when_classes_are_separated_by_more_than_margin():
  emb = jnp.asarray([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
  labels = jnp.asarray([0, 0, 1, 1])
  assert float(triplet_loss(emb, labels, 1.0)) == 0.0
  assert float(triplet_loss(emb, jnp.asarray([0, 1, 0, 1]), 1.0)) > 5.0


def test_hinge_and_gradient_penalty():
  real, fake = jnp.asarray([2.0, 0.5]), jnp.asarray([-2.0, 0.0])
  # relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; relu(1-2)=0, relu(1+0)=1 -> 0.5.
  np.testing.assert_allclose(float(losses.hinge_d_loss(real, fake)), 0.75)
  # A critic with gradient norm exactly 1 everywhere has zero penalty; norm 3 gives (3-1)^2 = 4.
  x = jnp.ones((4, 10))
  w = jnp.zeros((10,)).at[0].set(1.0)
  penalty = jax.jit(losses.gradient_penalty, static_argnums=0)
  assert float(penalty(lambda v: v @ w, x, -x, jax.random.key(0))) < 1e-6
  np.testing.assert_allclose(float(penalty(lambda v: v @ (3 * w), x, -x, jax.random.key(0))), 4.0, rtol=1e-5)


def _partials(midi: float, amplitudes, sample_rate=16000, length=8192):
  f0 = 440.0 * 2**((midi - 69) / 12)
  t = np.arange(length) / sample_rate
  return sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in enumerate(amplitudes, start=1)).astype(np.float32), f0


def test_fundamental_shares_are_the_listening_measure_and_the_matching_loss_is_w1_of_the_batches():
  """The share of a sine is 1, of 8 partials at 1/k 0.655, as listening.fundamental_share measures the clips; the
  matching loss is the mean absolute difference of the sorted shares (the real batch's order does not matter), 0
  for the real batch itself, and its gradient makes a batch of near-sines richer as the real notes are."""
  from face2music_jax.audio import listening
  notes = [
      _partials(m, a)
      for m, a in [(36, [1.0]), (60, [1 / k for k in range(1, 9)]), (72, [1.0, 0.5]), (48, [0.2, 1.0, 0.5])]
  ]
  audio, f0 = np.stack([n[0] for n in notes]), np.array([n[1] for n in notes], np.float32)
  shares = np.asarray(jax.jit(functools.partial(losses.fundamental_shares, sample_rate=16000))(audio, f0))
  np.testing.assert_allclose(shares, listening.fundamental_share(audio, [36, 60, 72, 48], 16000), atol=2e-3)
  np.testing.assert_allclose(shares[:2], [1.0, 0.655], atol=2e-3)
  real = jnp.asarray([0.3, 0.9, 0.5, 0.7])
  fake = jnp.asarray([0.95, 0.2, 0.6, 0.6])
  expected = np.mean(np.abs(np.sort(fake) - np.sort(real)))
  np.testing.assert_allclose(float(losses.share_matching_loss(real, fake)), expected, rtol=1e-6)
  np.testing.assert_allclose(float(losses.share_matching_loss(real[::-1], fake)), expected, rtol=1e-6)
  assert float(losses.share_matching_loss(real, real[::-1])) == 0.0
  grad = np.asarray(jax.grad(losses.share_matching_loss, argnums=(0, 1))(real, fake)[0])
  assert np.all(grad == 0)  # No gradient reaches the real notes.
  # Within groups (pitch bands): each group's sorted shares against the same group's; across groups nothing moves.
  groups = jnp.asarray([0, 1, 0, 1])
  by_group = [
      np.abs(np.sort(np.asarray(fake)[np.asarray(groups) == g]) - np.sort(np.asarray(real)[np.asarray(groups) == g]))
      for g in (0, 1)
  ]
  np.testing.assert_allclose(float(losses.share_matching_loss(real, fake, groups)),
                             np.concatenate(by_group).mean(), rtol=1e-6)
  swapped = jnp.asarray([0.9, 0.3, 0.7, 0.5])  # The real shares exchanged between the groups: a cost by group only.
  assert float(losses.share_matching_loss(real, swapped)) == 0.0
  assert float(losses.share_matching_loss(real, swapped, groups)) > 0.1

  sines = jnp.asarray(np.stack([_partials(m, [1.0])[0] for m in (36, 60, 72, 48)]))
  rich_real = losses.fundamental_shares(jnp.asarray(audio), jnp.asarray(f0), sample_rate=16000)

  def loss_of_second_partial(weight):  # The sines with a second partial of amplitude `weight` each.
    second = jnp.asarray(np.stack([_partials(m, [0.0, 1.0])[0] for m in (36, 60, 72, 48)]))
    return losses.share_matching_loss(
        rich_real, losses.fundamental_shares(sines + weight[:, None] * second, jnp.asarray(f0), sample_rate=16000))

  # Three of the real notes are richer than a sine: three of the near-sines are asked for more of their second
  # partial, the purest (matched with the real sine) for a little less.
  grad = np.asarray(jax.grad(loss_of_second_partial)(jnp.full(4, 0.1)))
  assert np.all(np.isfinite(grad)) and np.sum(grad < 0) == 3 and grad.sum() < 0


@pytest.mark.parametrize('family_weight, center', [(0.0, ''), (0.25, ''), (0.25, 'photo_faces.npz')])
def test_synthetic_statistics_are_those_the_configs_train_step_takes(family_weight, center):
  """The benchmarks' stand-in statistics (`synthetic.statistics(config)`) hold every entry, shape and dtype that a
  run of that config passes its train step (the `aux` default's family statistics included)."""
  config = helpers.tiny_config('aux')
  config.train.family_marginal_weight, config.train.family_faces_center = family_weight, center
  config.train.family_faces_spread = 1.25 if center else 0.0
  want = train._statistics_shapes(config)  # pylint: disable=protected-access
  got = synthetic.statistics(config)
  assert set(want) <= set(got)
  for key, shape in want.items():
    assert (np.shape(got[key]), np.asarray(got[key]).dtype) == (shape.shape, shape.dtype), key
