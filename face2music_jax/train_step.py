"""The GAN train step for all three configs: pure, jitted once, data-parallel, state donated.

The step is `(state, batch, metric, stats, rng) -> (state, metrics)`: the discriminators (main D on raw audio,
auxiliary A on phi(y) when enabled) take `config.train.d_steps` updates, then the generator one update against the
updated discriminators, with the metric preservation loss when enabled. The batch is sharded over a mesh of all
devices; parameters are replicated, so batch statistics and gradients are reduced over the whole global batch.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from face2music_jax import gan
from face2music_jax import losses
from face2music_jax import parallel
from face2music_jax.audio import synthesis
from face2music_jax.models import audio_embedding as embedding_lib


def _with(variables: dict[str, Any], params: Any, others: dict[str, Any]) -> dict[str, Any]:
  return {**variables, **others, 'params': params}


def make_train_step(models: gan.Models):
  """Returns the pure train step `(state, batch, metric, stats, rng) -> (state, metrics)`.

  batch: one sub-batch per discriminator update (D = config.train.d_steps), each of B examples:
  'embedding' [D, B, E] float32 face embeddings f(x), 'audio' [D, B, L] float32 real notes, 'pitch' [D, B] int32
  pitch classes of the real notes (the generator is conditioned on the same pitches). Discriminator update k sees
  real sub-batch k and the translations of faces k; the generator's update uses the last sub-batch. metric: the
  audio metric phi's variables (frozen). stats: Eq. 1's four standardisation constants (losses.STATS_KEYS), and the
  real notes' family statistics (losses.FAMILY_KEYS) when train.family_marginal_weight > 0 (that loss hears G's notes
  of the batch's faces or, with train.family_faces_spread > 0, of B more faces drawn around them, and with
  train.family_batch_weight > 0 of the batch's as well). rng: the run's root key.
  """
  c = models.config.train
  d_loss_fn, g_loss_fn = losses.adversarial_losses(c.loss)
  use_metric, use_aux = c.use_metric_loss, models.aux is not None
  use_pitch_head = c.pitch_classification_weight > 0
  one_pitch = use_metric and c.metric_pairs == 'one_pitch'
  use_families = c.family_marginal_weight > 0
  wide_faces = use_families and c.family_faces_spread > 0
  judge_wide = wide_faces and c.family_faces_judged
  use_shares = c.share_matching_weight > 0
  config = models.config

  def train_step(state: gan.TrainState, batch: dict[str, jax.Array], metric: Any, stats: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[gan.TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(rng, state.step)
    metrics = {}
    phi = functools.partial(embedding_lib.phi, metric, config=config)
    z, pitch = batch['embedding'][-1], batch['pitch'][-1]
    b = z.shape[0]
    if c.face_spread > 1:  # Each face farther from the batch's mean by a factor in [1, face_spread] (config).
      center = jnp.mean(z, axis=0, keepdims=True)
      spread = jax.random.uniform(jax.random.fold_in(rng, c.d_steps + 2), (b, 1), minval=1.0, maxval=c.face_spread)
      z = center + spread * (z - center)
    k_noise = jax.random.fold_in(rng, c.d_steps + 3)
    if c.face_noise > 0 and c.face_noise_space == 'embedding':
      # Isotropic noise on each face, face_noise times the batch's RMS spread per dimension.
      scale = jnp.sqrt(jnp.mean(jnp.var(z, axis=0)))
      z = z + c.face_noise * scale * jax.random.normal(k_noise, z.shape, z.dtype)
    elif c.face_noise > 0:  # 'projection': isotropic within G's face space, per its directions' RMS spread.
      basis = state.g['face_space']['basis']  # [E, K], orthonormal columns.
      scale = jnp.sqrt(jnp.mean(jnp.var(z @ basis, axis=0)))
      z = z + c.face_noise * scale * jax.random.normal(k_noise, (b, basis.shape[1]), z.dtype) @ basis.T
    g_z, g_pitch = z, pitch
    if one_pitch:  # The same faces once more, all at one pitch of the batch: Eq. 1's notes (config metric_pairs).
      shared = pitch[jax.random.randint(jax.random.fold_in(rng, c.d_steps + 1), (), 0, b)]
      g_z, g_pitch = jnp.concatenate([z, z]), jnp.concatenate([pitch, jnp.full_like(pitch, shared)])
    num_g = g_z.shape[0]
    if wide_faces:  # B more faces, Gaussian with family_faces_spread^2 times the batch's covariance, around its mean
      # or a photo domain's (stats' 'family_faces_center', config train.family_faces_center).
      center = jnp.mean(z, axis=0, keepdims=True)
      mix = jax.random.normal(jax.random.fold_in(rng, c.d_steps + 4), (b, b), z.dtype) / jnp.sqrt(b - 1.0)
      wide_z = stats.get('family_faces_center', center) + c.family_faces_spread * (mix @ (z - center))
      if c.family_faces_shift > 0:  # All of them moved by one offset, Gaussian with shift^2 times that covariance.
        offset = jax.random.normal(jax.random.fold_in(rng, c.d_steps + 5), (1, b), z.dtype) / jnp.sqrt(b - 1.0)
        wide_z = wide_z + c.family_faces_shift * (offset @ (z - center))

    d_vars, d_opt, aux_vars, aux_opt = state.d, state.d_opt, state.aux, state.aux_opt

    # The discriminator updates do not change G, so G's forward pass on the last sub-batch serves both the last D
    # update and G's own update: G's gradient is the pullback of the gradient w.r.t. the generated notes (one G
    # forward per step when d_steps = 1, not two).
    def g_forward(g_params):
      notes, others = models.generate(_with(state.g, g_params, {}), g_z, g_pitch, train=True)
      if wide_faces:  # Their notes as G makes a new face's, on its running statistics; only the family loss hears them.
        wide, _ = models.generate(_with(state.g, g_params, {}), wide_z, pitch, train=False)
        notes = jnp.concatenate([notes, wide])
      return notes, others

    fake_out, g_pullback, g_others = jax.vjp(g_forward, state.g['params'], has_aux=True)
    for k in range(c.d_steps):
      real, real_pitch = batch['audio'][k], batch['pitch'][k]
      if k == c.d_steps - 1:
        fake = jax.lax.stop_gradient(fake_out[:b])
      else:
        fake = jax.lax.stop_gradient(models.generate(state.g, batch['embedding'][k], real_pitch, train=True)[0])
      k_d, k_gp, k_agp = jax.random.split(jax.random.fold_in(rng, k), 3)
      d_others = {n: v for n, v in d_vars.items() if n != 'params'}
      aux_inputs = jnp.concatenate([phi(real), phi(fake)]) if use_aux else None

      def d_objective(d_params, aux_params, d_vars=d_vars, d_others=d_others, k_d=k_d, k_gp=k_gp, k_agp=k_agp,
                      real=real, fake=fake, real_pitch=real_pitch, aux_inputs=aux_inputs, aux_vars=aux_vars):
        logits, pitch_logits, new_others = models.discriminate(_with(d_vars, d_params, d_others),
                                                               jnp.concatenate([real, fake]),
                                                               jnp.concatenate([real_pitch, real_pitch]), k_d)
        real_logits, fake_logits = jnp.split(logits, 2)
        d_loss = d_loss_fn(real_logits, fake_logits)
        m = {'d_loss': d_loss, 'd_real_logit': jnp.mean(real_logits), 'd_fake_logit': jnp.mean(fake_logits)}
        total = d_loss
        if use_pitch_head:  # D learns to name the pitch of real notes (AC-GAN); G is asked to make it nameable.
          m['d_pitch_loss'] = losses.pitch_classification_loss(jnp.split(pitch_logits, 2)[0], real_pitch)
          total = total + c.pitch_classification_weight * m['d_pitch_loss']
        if c.loss == 'wgan-gp':
          critic = lambda x: models.discriminate(_with(d_vars, d_params, d_others), x, real_pitch, k_d)[0]
          m['gradient_penalty'] = losses.gradient_penalty(critic, real, fake, k_gp)
          total = total + c.gp_weight * m['gradient_penalty']
        if use_aux:
          aux_critic = lambda x, p: models.aux.apply(_with(aux_vars, aux_params, {}), x, p)
          m['aux_d_loss'] = d_loss_fn(*jnp.split(aux_critic(aux_inputs, jnp.concatenate([real_pitch, real_pitch])), 2))
          total = total + m['aux_d_loss']
          if c.loss == 'wgan-gp':  # The auxiliary critic is Lipschitz-constrained the same way as the main one.
            m['aux_gradient_penalty'] = losses.gradient_penalty(lambda x: aux_critic(x, real_pitch),
                                                                *jnp.split(aux_inputs, 2), k_agp)
            total = total + c.gp_weight * m['aux_gradient_penalty']
          if c.aux_r1_weight > 0:  # A's gradient on real notes penalised (R1): A stays smooth where real notes lie.
            m['aux_r1'] = losses.r1_penalty(lambda x: aux_critic(x, real_pitch), aux_inputs[:b])
            total = total + c.aux_r1_weight * m['aux_r1']
        return total, (new_others, m)

      aux_params = aux_vars['params'] if use_aux else {}
      (_, (d_others, m)), (d_grads, aux_grads) = jax.value_and_grad(d_objective, argnums=(0, 1),
                                                                    has_aux=True)(d_vars['params'], aux_params)
      updates, d_opt = models.d_tx.update(d_grads, d_opt, d_vars['params'])
      d_vars = _with(d_vars, optax.apply_updates(d_vars['params'], updates), d_others)
      metrics.update(m, d_grad_norm=optax.tree.norm(d_grads))
      if use_aux:
        updates, aux_opt = models.aux_tx.update(aux_grads, aux_opt, aux_params)
        aux_vars = _with(aux_vars, optax.apply_updates(aux_params, updates), {})
        metrics['aux_grad_norm'] = optax.tree.norm(aux_grads)

    # The real notes of G's sub-batch, at the pitches of its translations (the family-marginal loss).
    real_phi = (aux_inputs[:b] if use_aux else phi(batch['audio'][-1])) if use_families else None
    if use_shares:  # The real notes of G's sub-batch, at the pitches of its translations: their shares, once.
      f0_hz = synthesis.midi_to_hz((pitch + config.audio.pitch_min).astype(jnp.float32))
      share = functools.partial(losses.fundamental_shares, f0_hz=f0_hz, sample_rate=config.audio.sample_rate)
      real_shares = share(batch['audio'][-1])
      bands = (pitch + config.audio.pitch_min) // c.share_matching_band if c.share_matching_band else None
    k_g = jax.random.fold_in(rng, c.d_steps)
    # The metric loss ramps up linearly over its warm-up, so that G first learns from D what a note is.
    warmup = jnp.minimum(1.0, (state.step + 1) / c.metric_warmup_steps) if c.metric_warmup_steps else 1.0
    metric_weight = c.metric_weight * warmup

    def g_objective(fake_out):
      fake = fake_out[:b]  # At the batch's pitches: what D, the pitch head and A judge.
      logits, pitch_logits, _ = models.discriminate(d_vars, fake, pitch, k_g)
      m = {'g_adv_loss': g_loss_fn(logits)}
      total = m['g_adv_loss']
      if use_pitch_head:
        m['g_pitch_loss'] = losses.pitch_classification_loss(pitch_logits, pitch)
        total = total + c.pitch_classification_weight * m['g_pitch_loss']
      if judge_wide:  # D judges the wide faces' notes as it judges the batch's (it does not train on them).
        wide_logits, wide_pitch_logits, _ = models.discriminate(d_vars, fake_out[num_g:], pitch,
                                                                jax.random.fold_in(k_g, 1))
        m['g_adv_loss_wide'] = g_loss_fn(wide_logits)
        total = total + m['g_adv_loss_wide']
        if use_pitch_head:
          m['g_pitch_loss_wide'] = losses.pitch_classification_loss(wide_pitch_logits, pitch)
          total = total + c.pitch_classification_weight * m['g_pitch_loss_wide']
      if use_metric or use_aux or use_families:
        all_phi = phi(fake_out)
        fake_phi = all_phi[:b]
      if use_metric:
        m.update(
            losses.metric_losses(z, all_phi[b:num_g] if one_pitch else fake_phi, stats, c.metric_features,
                                 config.mfcc.n_mfcc, c.metric_shift))
        total = total + metric_weight * m['metric_loss']
      if use_aux:
        m['aux_g_loss'] = g_loss_fn(models.aux.apply(aux_vars, fake_phi, pitch))
        total = total + c.aux_weight * m['aux_g_loss']
      if use_families:
        family_phi = all_phi[num_g:] if wide_faces else fake_phi
        m['family_marginal_loss'] = losses.family_marginal_loss(real_phi, family_phi, stats)
        total = total + c.family_marginal_weight * m['family_marginal_loss']
        if wide_faces and c.family_batch_weight > 0:  # The batch's notes held to the real families as well.
          m['family_marginal_loss_batch'] = losses.family_marginal_loss(real_phi, fake_phi, stats)
          total = total + c.family_batch_weight * m['family_marginal_loss_batch']
      if use_shares:  # The fundamental's share of the notes, distributed as the real notes' (config).
        m['share_matching_loss'] = losses.share_matching_loss(real_shares, share(fake), bands)
        total = total + c.share_matching_weight * m['share_matching_loss']
      m['g_loss'] = total
      return total, m

    (_, m), fake_grads = jax.value_and_grad(g_objective, has_aux=True)(jax.lax.stop_gradient(fake_out))
    (g_grads,) = g_pullback(fake_grads)
    updates, g_opt = models.g_tx.update(g_grads, state.g_opt, state.g['params'])
    g_vars = _with(state.g, optax.apply_updates(state.g['params'], updates), g_others)
    g_ema = state.g_ema
    if c.g_ema_decay > 0:  # The average of G's parameters, its decay ramped up over the first steps (config).
      decay = jnp.minimum(c.g_ema_decay, (1.0 + state.step) / (10.0 + state.step))
      g_ema = _with(g_vars, optax.incremental_update(g_vars['params'], g_ema['params'], 1.0 - decay), {})
    metrics.update(m, g_grad_norm=optax.tree.norm(g_grads), g_param_norm=optax.tree.norm(g_vars['params']),
                   d_param_norm=optax.tree.norm(d_vars['params']))

    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    new = gan.TrainState(step=state.step + 1, g=g_vars, d=d_vars, aux=aux_vars, g_opt=g_opt, d_opt=d_opt,
                         aux_opt=aux_opt, skipped=state.skipped, g_ema=g_ema)
    if c.nonfinite == 'skip':
      kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
      new = kept.replace(step=state.step + 1, skipped=state.skipped + (1 - finite.astype(jnp.int32)))
    metrics['finite'] = finite.astype(jnp.float32)
    metrics['skipped'] = new.skipped.astype(jnp.float32)
    return new, metrics

  return train_step


def compile_train_step(models: gan.Models, mesh: jax.sharding.Mesh):
  """jax.jit of the train step over the mesh: batch sharded along 'data' (its axis 1), everything else replicated."""
  repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(make_train_step(models), in_shardings=(repl, data, repl, repl, repl), out_shardings=(repl, repl),
                 donate_argnums=(0,))
