"""Losses: adversarial (hinge, WGAN-GP), metric preservation (the paper's Eq. 1) and triplet.

All functions are pure, jittable and vectorised over the batch.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from face2music_jax import config_lib
from face2music_jax.audio import harmonic_bands as bands_lib

STATS_KEYS = ('mu_x', 'sigma_x', 'mu_y', 'sigma_y')
# Added to the statistics when train.family_marginal_weight > 0: the real notes' family centroids in phi [K, F]
# (K = every NSynth family), which of them the notes hold [K] (1 or 0), and the scale of the soft assignments
# (`family_posteriors`; a scalar, fitted so that they name the notes' own families with the highest likelihood).
FAMILY_KEYS = ('family_centroids', 'family_present', 'family_scale')
# Added to the statistics when train.metric_features = 'both': mu_y and sigma_y of the real notes' distances in phi's
# MFCC half (`metric_losses`).
MFCC_STATS_KEYS = ('mu_y_mfcc', 'sigma_y_mfcc')


def statistics_keys(features: str) -> tuple[str, ...]:
  """The constants Eq. 1 needs in the space `features` (config train.metric_features): STATS_KEYS, and
  MFCC_STATS_KEYS too for 'both'."""
  return STATS_KEYS + (MFCC_STATS_KEYS if features == 'both' else ())


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator hinge loss (projection-discriminator recipe). Logits: [B]."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Generator hinge loss: -E[D(G(z))]. Logits: [B]."""
  return -jnp.mean(fake_logits)


def wgan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Critic loss of WGAN (add `gradient_penalty` for WGAN-GP). Logits: [B]."""
  return jnp.mean(fake_logits) - jnp.mean(real_logits)


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array) -> jax.Array:
  """WGAN-GP penalty E[(||grad critic(x_hat)||_2 - 1)^2] on random interpolates of real and fake.

  Args:
    critic: maps inputs [B, ...] to logits [B].
    real: [B, ...] real examples.
    fake: [B, ...] generated examples (same shape).
    rng: PRNG key for the interpolation weights.
  """
  alpha = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = alpha * real + (1.0 - alpha) * fake
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1 (Mescheder et al. 2018): the mean over the critic's outputs of the squared norm of its gradient with
  respect to its input, at the real examples x [B, ...].

  A zero-centred penalty on the critic's gradient where the real data lie: it keeps the critic from a sharp boundary
  around them, so that its gradient tells a generator where its samples are too many rather than only that they
  are not real. A critic that judges packs of examples (one output for several rows) is penalised per pack: the
  squared norm of a pack's gradient is the sum over its rows.
  """
  outputs = jax.eval_shape(critic, real).shape[0]
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(real)
  return jnp.sum(jnp.square(grads)) / outputs


def adversarial_losses(loss: str) -> tuple[Callable[..., jax.Array], Callable[[jax.Array], jax.Array]]:
  """Returns (d_loss(real_logits, fake_logits), g_loss(fake_logits)) for 'hinge' or 'wgan-gp'."""
  if loss == 'hinge':
    return hinge_d_loss, hinge_g_loss
  if loss == 'wgan-gp':
    return wgan_d_loss, hinge_g_loss  # The WGAN generator loss is also -E[D(G(z))].
  raise ValueError(f'Unknown adversarial loss {loss!r}.')


def pitch_classification_loss(pitch_logits: jax.Array, pitch: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of the discriminator's pitch head: logits [B, P], int pitch classes [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(pitch_logits, pitch).mean()


def pairwise_distances(x: jax.Array) -> jax.Array:
  """Euclidean distances between all rows: x [B, D] -> [B, B].

  The square root is clamped away from 0 so that the gradient stays finite on the diagonal. The Gram matrix asks
  for full float32 precision: d2 is a difference of terms of order |x|^2, so the 1e-3 relative rounding that XLA's
  default precision allows on accelerators (TF32 on NVIDIA GPUs) would swamp the distances of close points.
  """
  sq = jnp.sum(jnp.square(x), axis=-1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(d2, 1e-12))


def metric_preservation_loss(face_embeddings: jax.Array, audio_features: jax.Array, stats: dict[str, Any],
                             shift: float = 0.0) -> jax.Array:
  """The paper's Eq. 1, over all unordered pairs i < j of the batch (Z = B(B-1)/2 pairs).

  L = 1/Z sum_{i<j} |(||f_i - f_j|| - mu_x) / sigma_x + shift - (||phi(y_i) - phi(y_j)|| - mu_y) / sigma_y|

  Args:
    face_embeddings: f(x), [B, E].
    audio_features: phi(y) of the translations, [B, F].
    stats: dataset-wide 'mu_x', 'sigma_x' (face pairwise distances) and 'mu_y', 'sigma_y' (audio).
    shift: added to every pair's standardised face distance (0 = the paper's Eq. 1): the notes of any two faces
      are asked to lie `shift` standard deviations of the real notes' distances farther apart than the faces'
      standardised distance says (config train.metric_shift).
  Returns:
    Scalar loss.
  """
  b = face_embeddings.shape[0]
  i, j = jnp.triu_indices(b, k=1)
  d_x = pairwise_distances(face_embeddings)[i, j]
  d_y = pairwise_distances(audio_features)[i, j]
  z_x = (d_x - stats['mu_x']) / stats['sigma_x'] + shift
  z_y = (d_y - stats['mu_y']) / stats['sigma_y']
  return jnp.mean(jnp.abs(z_x - z_y))


def metric_losses(face_embeddings: jax.Array, phi: jax.Array, stats: dict[str, Any], features: str, n_mfcc: int,
                  shift: float = 0.0) -> dict[str, jax.Array]:
  """Eq. 1 in the audio space `features` names (config train.metric_features): 'phi', the whole audio metric (the
  paper's); 'mfcc', its MFCC half (the last n_mfcc features: the notes' MFCC means, a listener's ruler), with
  stats' mu_y and sigma_y of that half; 'both', Eq. 1 in phi plus Eq. 1 in its MFCC half, the latter standardised
  by stats' 'mu_y_mfcc' and 'sigma_y_mfcc' (MFCC_STATS_KEYS).

  Args:
    face_embeddings: f(x), [B, E].
    phi: phi(y) of the translations, [B, F], the MFCC half last.
    stats: Eq. 1's constants (STATS_KEYS; MFCC_STATS_KEYS too for 'both').
    features: one of config_lib.METRIC_FEATURES.
    n_mfcc: the width of phi's MFCC half.
    shift: as in `metric_preservation_loss`.
  Returns:
    {'metric_loss': the loss G minimises}, with 'both' also its two terms 'metric_loss_phi' and 'metric_loss_mfcc'.
  """
  if features not in config_lib.METRIC_FEATURES:
    raise ValueError(f'Expected features in {config_lib.METRIC_FEATURES}; got {features!r}.')
  mfcc = phi[:, phi.shape[-1] - n_mfcc:]
  if features == 'phi':
    return {'metric_loss': metric_preservation_loss(face_embeddings, phi, stats, shift)}
  if features == 'mfcc':
    return {'metric_loss': metric_preservation_loss(face_embeddings, mfcc, stats, shift)}
  m = {
      'metric_loss_phi':
          metric_preservation_loss(face_embeddings, phi, stats, shift),
      'metric_loss_mfcc':
          metric_preservation_loss(face_embeddings, mfcc,
                                   dict(stats, mu_y=stats['mu_y_mfcc'], sigma_y=stats['sigma_y_mfcc']), shift)
  }
  return dict(m, metric_loss=m['metric_loss_phi'] + m['metric_loss_mfcc'])


def family_posteriors(phi: jax.Array, centroids: jax.Array, present: jax.Array, scale: jax.Array) -> jax.Array:
  """Soft family assignments of notes: softmax over the present families of -||phi - c_k||^2 / (2 scale^2).

  Args:
    phi: phi(y) of the notes, [B, F].
    centroids: the real notes' family centroids in phi, [K, F].
    present: [K], 1 for the families the real notes hold, 0 for the others (probability 0).
    scale: a distance in phi (a scalar): the softmax's temperature is 2 scale^2.
  Returns:
    [B, K] probabilities.
  """
  d2 = jnp.sum(jnp.square(phi[:, None, :] - centroids[None]), axis=-1)
  return jax.nn.softmax(jnp.where(present > 0, -d2 / (2.0 * jnp.square(scale)), -jnp.inf), axis=-1)


def family_marginal_loss(real_phi: jax.Array, fake_phi: jax.Array, families: dict[str, jax.Array],
                         floor: float = 1e-6) -> jax.Array:
  """KL(m_real || m_fake) of the batches' mean soft family assignments (`family_posteriors`), each mixed with
  `floor` of the uniform distribution over the present families, so that a family no note of a batch lies near
  stays finite. families: FAMILY_KEYS (`family_posteriors`).

  Mode-covering: a family the real notes hold and the translations miss costs most, and its pull on the
  translations (towards it, on those nearest it) is its share of the real notes however small their assignments
  to it are, while they are above `floor`. No gradient reaches the real notes. Config train.family_marginal_weight.
  """
  centroids, present, scale = (families[k] for k in FAMILY_KEYS)
  uniform = present / jnp.sum(present)
  mean = lambda x: (1.0 - floor) * jnp.mean(family_posteriors(x, centroids, present, scale), axis=0) + floor * uniform
  m_real, m_fake = mean(jax.lax.stop_gradient(real_phi)), mean(fake_phi)
  terms = m_real * (jnp.log(jnp.where(present > 0, m_real, 1.0)) - jnp.log(jnp.where(present > 0, m_fake, 1.0)))
  return jnp.sum(jnp.where(present > 0, terms, 0.0))


def fundamental_shares(audio: jax.Array, f0_hz: jax.Array, *, sample_rate: int, num_harmonics: int = 8) -> jax.Array:
  """[B, T] notes, [B] fundamentals in Hz -> [B] the share of each note's energy in its first `num_harmonics`
  harmonic bands (audio/harmonic_bands.py, summed over the note's frames) that lies in the fundamental's band: 1 for
  a sine, 0.65 for 8 partials of amplitudes 1/k (as listening.fundamental_share measures a whole clip)."""
  energies = jnp.sum(
      bands_lib.harmonic_band_energies(audio, f0_hz, num_harmonics=num_harmonics, sample_rate=sample_rate), axis=1)
  return energies[:, 0] / (jnp.sum(energies, axis=-1) + 1e-12)


def share_matching_loss(real_share: jax.Array, fake_share: jax.Array, groups: jax.Array | None = None) -> jax.Array:
  """The 1-Wasserstein distance between the batch's real and generated fundamental shares ([B] each), within each
  group of `groups` ([B] integers, e.g. pitch bands; None = one group): the mean absolute difference of the values
  sorted by (group, share). Real and generated notes must hold the same groups equally often (the train step's do:
  they share their pitches). Matches the distribution, not each note: a group may hold pure tones and rich ones in
  the real notes' proportions, whichever faces get them. No gradient reaches the real notes."""
  # Shares lie in [0, 1]: group g's notes sort between 2 g and 2 g + 1, after every note of a lower group.
  offset = 0.0 if groups is None else 2.0 * groups.astype(jnp.float32)
  order = lambda share: share[jnp.argsort(jax.lax.stop_gradient(offset + share))]
  return jnp.mean(jnp.abs(order(fake_share) - order(jax.lax.stop_gradient(real_share))))


def triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float, mining: str = 'batch_hard') -> jax.Array:
  """Triplet loss with online mining; positives share the label, negatives don't.

  'batch_hard' (Hermans et al. 2017): per anchor, the farthest positive and the closest negative.
  'semi_hard' (Schroff et al. 2015): per positive pair (a, p), the closest negative farther than p; the farthest
  negative where no such one exists.

  Args:
    embeddings: [B, D].
    labels: [B] integer labels.
    margin: the margin alpha.
    mining: 'batch_hard' or 'semi_hard'.
  Returns:
    Scalar loss, averaged over anchors (batch_hard) or positive pairs (semi_hard) that have a positive and a
    negative in the batch; 0 when there are none.
  """
  d = pairwise_distances(embeddings)
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(labels.shape[0], dtype=bool)
  pos_mask = same & not_self
  neg_mask = ~same
  has_neg = jnp.any(neg_mask, axis=1)
  big = jnp.max(d) + 1.0
  if mining == 'batch_hard':
    hardest_pos = jnp.max(jnp.where(pos_mask, d, 0.0), axis=1)
    hardest_neg = jnp.min(jnp.where(neg_mask, d, big), axis=1)
    valid = jnp.any(pos_mask, axis=1) & has_neg
    per_anchor = jax.nn.relu(hardest_pos - hardest_neg + margin)
    return jnp.sum(jnp.where(valid, per_anchor, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  if mining == 'semi_hard':
    d_ap = d[:, :, None]  # [anchor, positive, 1]
    d_an = d[:, None, :]  # [anchor, 1, negative]
    semi = neg_mask[:, None, :] & (d_an > d_ap)
    closest_semi = jnp.min(jnp.where(semi, d_an, big), axis=2)
    farthest_neg = jnp.max(jnp.where(neg_mask, d, 0.0), axis=1)[:, None]
    chosen = jnp.where(jnp.any(semi, axis=2), closest_semi, farthest_neg)
    valid = pos_mask & has_neg[:, None]
    per_pair = jax.nn.relu(d - chosen + margin)
    return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  raise ValueError(f'Unknown triplet mining {mining!r}; expected batch_hard or semi_hard.')
