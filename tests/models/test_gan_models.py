"""The generator and the discriminators at tiny widths and the real length (8192 samples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax.configs import default
from face2music_jax.models import discriminator as discriminator_lib
from face2music_jax.models import generator as generator_lib

LENGTH = 8192
NUM_PITCHES = 5


@pytest.fixture(scope='module', autouse=True)
def _fast_compiles():
  """These tests check shapes, ranges and finiteness, which XLA's optimisations do not change. The setting the
  worker had is restored after them (conftest's, unless the environment says otherwise): the modules that follow
  compile as the rest of the suite does."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def _init(module, *args, **kwargs):
  """Jitted init: eager init dispatches (and compiles) every operation separately, which is slower."""
  return jax.jit(lambda key, *args: module.init(key, *args, **kwargs))(jax.random.key(1), *args)


def _inputs(batch: int = 3) -> tuple[jax.Array, jax.Array]:
  z = jax.random.normal(jax.random.key(0), (batch, 16))
  return z, jnp.arange(batch, dtype=jnp.int32) % NUM_PITCHES


def _random_params(params, key: int = 7):
  """Replaces every parameter with noise, so that per-class embeddings differ between classes."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(key), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])


@pytest.mark.slow
def test_generator_shapes_range_and_pitch_conditioning():
  generator = generator_lib.WaveGANGenerator(dim=2, num_pitches=NUM_PITCHES, length=LENGTH)
  z, pitch = _inputs()
  variables = _init(generator, z, pitch, train=False)
  assert set(variables) == {'params', 'batch_stats'}
  apply_train = jax.jit(lambda v, z, p: generator.apply(v, z, p, train=True, mutable=['batch_stats']))
  audio, updates = apply_train(variables, z, pitch)
  assert audio.shape == (3, LENGTH) and audio.dtype == jnp.float32
  assert float(np.max(np.abs(audio))) <= 1.0
  assert jax.tree.structure(updates['batch_stats']) == jax.tree.structure(variables['batch_stats'])

  variables = {'params': _random_params(variables['params']), 'batch_stats': updates['batch_stats']}
  apply_eval = jax.jit(lambda v, z, p: generator.apply(v, z, p, train=False))
  same_face = jnp.repeat(z[:1], 3, axis=0)
  a = apply_eval(variables, same_face, jnp.zeros(3, jnp.int32))
  b = apply_eval(variables, same_face, jnp.ones(3, jnp.int32))
  assert a.shape == (3, LENGTH) and float(np.max(np.abs(a))) <= 1.0
  assert float(np.max(np.abs(a - b))) > 1e-3


@pytest.mark.slow
def test_generator_gradients_are_finite():
  generator = generator_lib.WaveGANGenerator(dim=2, num_pitches=NUM_PITCHES, length=LENGTH)
  z, pitch = _inputs()
  variables = _init(generator, z, pitch, train=False)

  @jax.jit
  def grads(params):

    def loss(params, z):
      audio, _ = generator.apply({
          'params': params,
          'batch_stats': variables['batch_stats']
      }, z, pitch, train=True, mutable=['batch_stats'])
      return jnp.mean(audio**2)

    return jax.grad(loss, argnums=(0, 1))(params, z)

  g_params, g_z = grads(variables['params'])
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves((g_params, g_z)))
  assert float(np.max(np.abs(g_params['upconv0']['kernel']))) > 0


def test_generator_rejects_indivisible_length():
  generator = generator_lib.WaveGANGenerator(dim=2, num_pitches=NUM_PITCHES, length=1000)
  with pytest.raises(ValueError, match='divisible'):
    _init(generator, *_inputs(), train=False)


@pytest.mark.slow
def test_discriminator_train_and_eval():
  discriminator = discriminator_lib.Discriminator(dim=2, num_pitches=NUM_PITCHES)
  _, pitch = _inputs()
  audio = jnp.tanh(jax.random.normal(jax.random.key(2), (3, LENGTH)))
  variables = _init(discriminator, audio, pitch, train=False)
  assert set(variables) == {'params', 'batch_stats'}
  # Spectral norm on every layer: the five convs, the linear output and the pitch embedding.
  assert len(variables['batch_stats']) == 7

  @jax.jit
  def train_step(variables, rng):

    def loss(params, audio):
      logits, updates = discriminator.apply({
          **variables, 'params': params
      }, audio, pitch, train=True, mutable=['batch_stats'], rngs={'phase_shuffle': rng})
      return jnp.sum(logits), (logits, updates)

    grads, (logits, updates) = jax.grad(loss, argnums=(0, 1), has_aux=True)(variables['params'], audio)
    return grads, logits, updates

  grads, logits, updates = train_step(variables, jax.random.key(3))
  assert logits.shape == (3,)
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
  _, other_logits, _ = train_step(variables, jax.random.key(4))
  assert not np.allclose(logits, other_logits)  # Phase shuffle draws new shifts.

  variables = {**variables, **updates}
  apply_eval = jax.jit(lambda v, p: discriminator.apply(v, audio, p, train=False))
  eval_logits = apply_eval(variables, pitch)
  assert eval_logits.shape == (3,)
  np.testing.assert_array_equal(eval_logits, apply_eval(variables, pitch))
  assert not np.allclose(eval_logits, apply_eval(variables, (pitch + 1) % NUM_PITCHES))  # Projection head.


@pytest.mark.slow
def test_discriminator_spectral_norms_track_top_singular_values():
  discriminator = discriminator_lib.Discriminator(dim=2, num_pitches=NUM_PITCHES)
  _, pitch = _inputs()
  audio = jnp.tanh(jax.random.normal(jax.random.key(2), (3, LENGTH)))
  variables = _init(discriminator, audio, pitch, train=False)
  update = jax.jit(lambda v, rng: discriminator.apply(v, audio, pitch, train=True, mutable=['batch_stats'], rngs=
                                                      {'phase_shuffle': rng})[1])
  for step in range(60):
    variables = {**variables, **update(variables, jax.random.key(step))}
  for name, stats in variables['batch_stats'].items():
    layer = name.removesuffix('_sn')
    params = variables['params'][layer]
    weight = params['kernel'] if 'kernel' in params else params['embedding']
    top = np.linalg.svd(np.asarray(weight).reshape(-1, weight.shape[-1]), compute_uv=False)[0]
    sigma = next(v for k, v in stats.items() if k.endswith('/sigma'))
    np.testing.assert_allclose(top / sigma, 1.0, rtol=2e-2, err_msg=name)


def test_aux_discriminator():
  aux = discriminator_lib.AuxDiscriminator()
  phi = jax.random.normal(jax.random.key(0), (4, 40))
  variables = _init(aux, phi)
  assert [variables['params'][f'dense{i}']['kernel'].shape[1] for i in range(5)] == [128, 64, 32, 16, 1]
  logits = jax.jit(aux.apply)(variables, phi)
  assert logits.shape == (4,)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(aux.apply({'params': p}, phi))))(variables['params'])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_aux_discriminator_packs_notes_and_judges_them_together():
  aux = discriminator_lib.AuxDiscriminator(pack=2)
  phi = jax.random.normal(jax.random.key(0), (6, 40))
  variables = _init(aux, phi)
  assert variables['params']['dense0']['kernel'].shape == (80, 128)  # Two notes' phi side by side.
  logits = jax.jit(aux.apply)(variables, phi)
  assert logits.shape == (3,)
  swapped = phi[jnp.array([1, 0, 2, 3, 4, 5])]  # The first pack's notes in the other order: another input.
  changed = np.asarray(jax.jit(aux.apply)(variables, swapped))
  assert changed[0] != logits[0] and np.array_equal(changed[1:], np.asarray(logits)[1:])
  with pytest.raises(ValueError, match='packs 2 notes: a batch of 5 does not divide'):
    aux.apply(variables, phi[:5])


def test_aux_input_scale_weighs_each_mfcc_coefficient_by_its_own_spread_over_the_real_notes():
  """train.aux_mfcc_scale = 'coefficient': fitted on real phi(y) whose MFCC coefficients spread very unequally (as
  phi's pooled half does: c0 most), the weights give every coefficient the same spread over those notes and keep the
  half's RMS spread; the conv half is untouched; A with the scale judges phi * weight as A without it judges that."""
  rng = np.random.default_rng(0)
  n_mfcc, conv = 5, 7
  spreads = np.array([4.0, 1.0, 0.5, 0.25, 0.1])
  real_phi = np.concatenate([rng.normal(size=(500, conv)), rng.normal(size=(500, n_mfcc)) * spreads], axis=1)
  weight = discriminator_lib.fit_aux_input_scale(real_phi, n_mfcc)['weight']
  assert weight.shape == (conv + n_mfcc,) and weight.dtype == np.float32
  np.testing.assert_array_equal(weight[:conv], 1.0)
  scaled = (real_phi * weight)[:, conv:].std(axis=0)
  rms = np.sqrt(np.mean(np.square(real_phi[:, conv:].std(axis=0))))
  np.testing.assert_allclose(scaled, rms, rtol=1e-5)
  assert weight[conv] < 1 < weight[-1]  # c0 weighed down, the finest coefficient up.
  aux = discriminator_lib.AuxDiscriminator(input_scale=True)
  phi = jnp.asarray(real_phi[:4], jnp.float32)
  variables = _init(aux, phi)
  np.testing.assert_array_equal(variables['input_scale']['weight'], np.ones(conv + n_mfcc))  # Fitted later.
  variables = {'params': _random_params(variables['params']), 'input_scale': {'weight': weight}}
  plain = discriminator_lib.AuxDiscriminator().apply({'params': variables['params']}, phi * weight)
  np.testing.assert_allclose(aux.apply(variables, phi), plain, rtol=1e-6)
  assert not np.allclose(aux.apply(variables, phi), aux.apply({
      **variables, 'input_scale': {
          'weight': np.ones(12)
      }
  }, phi))
  with pytest.raises(ValueError, match='does not vary'):
    discriminator_lib.fit_aux_input_scale(np.concatenate([real_phi, np.ones((500, 1))], axis=1), n_mfcc)
  with pytest.raises(ValueError, match='NaN or infinite'):
    discriminator_lib.fit_aux_input_scale(np.where(real_phi > 3, np.nan, real_phi), n_mfcc)
  with pytest.raises(ValueError, match='at least 2 real notes'):
    discriminator_lib.fit_aux_input_scale(real_phi[:1], n_mfcc)


def test_pitch_conditional_aux_discriminator_judges_a_note_against_its_pitch():
  aux = discriminator_lib.AuxDiscriminator(num_pitches=5)
  phi = jax.random.normal(jax.random.key(0), (4, 40))
  pitch = jnp.array([0, 1, 2, 3])
  variables = _init(aux, phi, pitch)
  embedding = np.asarray(variables['params']['pitch_projection']['embedding'])
  assert embedding.shape == (5, 16)  # One row per pitch, of h's width.
  apply = jax.jit(aux.apply)
  logits = np.asarray(apply(variables, phi, pitch))
  assert logits.shape == (4,)
  # The same notes at other pitches: other logits, by the projection <embed(pitch), h> alone.
  assert np.all(np.asarray(apply(variables, phi, pitch + 1)) != logits)
  unconditional = discriminator_lib.AuxDiscriminator().apply(
      {'params': {
          k: v for k, v in variables['params'].items() if k != 'pitch_projection'
      }}, phi)
  hidden = _aux_hidden(variables['params'], phi)
  np.testing.assert_allclose(logits,
                             np.asarray(unconditional) + np.sum(embedding[pitch] * hidden, axis=-1), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match='needs one pitch per note'):
    aux.apply(variables, phi)
  # Packed notes add their pitches' embeddings: <embed(p0) + embed(p1), h of the pack>.
  packed = discriminator_lib.AuxDiscriminator(pack=2, num_pitches=5)
  variables = _init(packed, phi, pitch)
  embedding = np.asarray(variables['params']['pitch_projection']['embedding'])
  apply = jax.jit(packed.apply)
  logits = np.asarray(apply(variables, phi, pitch))
  assert logits.shape == (2,)
  assert np.array_equal(np.asarray(apply(variables, phi, pitch[jnp.array([1, 0, 2, 3])])), logits)
  hidden = _aux_hidden(variables['params'], phi.reshape(2, 80))
  expected_projection = np.sum((embedding[pitch[0::2]] + embedding[pitch[1::2]]) * hidden, axis=-1)
  unconditional = discriminator_lib.AuxDiscriminator(pack=2).apply(
      {'params': {
          k: v for k, v in variables['params'].items() if k != 'pitch_projection'
      }}, phi)
  np.testing.assert_allclose(logits, np.asarray(unconditional) + expected_projection, rtol=1e-5, atol=1e-6)
  # Another pitch for one note of the second pack: only that pack's logit changes.
  changed = np.asarray(apply(variables, phi, pitch.at[3].set(4)))
  assert changed[0] == logits[0] and changed[1] != logits[1]


def _aux_hidden(params, phi):
  """A's last hidden layer (the input of its last dense layer), computed by hand."""
  x = np.asarray(phi)
  for i in range(4):
    if i:
      x = np.where(x > 0, x, 0.2 * x)
    x = x @ np.asarray(params[f'dense{i}']['kernel']) + np.asarray(params[f'dense{i}']['bias'])
  return np.where(x > 0, x, 0.2 * x)


def test_make_from_config():
  config = default.get_config('tiny')
  generator = generator_lib.make_generator(config)
  discriminator = discriminator_lib.make_discriminator(config)
  aux = discriminator_lib.make_aux_discriminator(config)
  assert generator.num_pitches == discriminator.num_pitches == 13
  assert generator.length == config.audio.length and generator.hidden == config.model.harmonic.hidden
  assert not generator.steady_harmonics  # A distribution per control frame, unless the config says otherwise.
  config.model.harmonic.steady_harmonics = True
  assert generator_lib.make_generator(config).steady_harmonics
  config.model.harmonic.steady_harmonics = False
  assert discriminator.phase_shuffle == config.model.phase_shuffle
  assert discriminator.harmonic_bands == 0  # WaveGAN's D, unless the config asks for the harmonic branch.
  config.model.discriminator_harmonics = 12
  harmonic_d = discriminator_lib.make_discriminator(config)
  assert harmonic_d.harmonic_bands == 12 and harmonic_d.pitch_min == config.audio.pitch_min
  assert aux.features == tuple(config.model.aux_features) and aux.num_pitches == 0  # The paper's A.
  config.model.aux_pitch_conditional = True
  assert discriminator_lib.make_aux_discriminator(config).num_pitches == 13
  z = jnp.zeros((2, config.data.embedding_dim))
  pitch = jnp.array([0, 12], jnp.int32)
  audio = jax.eval_shape(lambda: generator.init_with_output(jax.random.key(0), z, pitch, train=False)[0])
  assert audio.shape == (2, config.audio.length)


@pytest.mark.slow
@pytest.mark.parametrize('upsample', ['nearest', 'linear'])
def test_generator_upsampling_options(upsample):
  """Upsampling + stride-1 convolution in place of the transposed convolutions, with the pitch input and the
  post-processing filter: same output shape, finite gradients, and the pitch embedding reaches the output."""
  generator = generator_lib.WaveGANGenerator(dim=2, num_pitches=NUM_PITCHES, length=LENGTH, upsample=upsample,
                                             pitch_input=True, post_filter=64)
  z, pitch = _inputs()
  variables = _init(generator, z, pitch, train=False)
  assert variables['params']['post_filter']['kernel'].shape == (64, 1, 1)
  assert variables['params']['upconv0']['kernel'].shape == (25, 32, 16)  # Stock stride-1 conv kernel.
  apply = jax.jit(lambda v, p: generator.apply(v, z, p, train=False))
  audio = apply(variables, pitch)
  assert audio.shape == (3, LENGTH) and bool(np.all(np.isfinite(audio)))
  params = dict(variables['params'])
  params['pitch_embedding'] = _random_params(params['pitch_embedding'])
  variables = {**variables, 'params': params}
  assert not np.allclose(apply(variables, pitch), apply(variables, (pitch + 1) % NUM_PITCHES))
  grads = jax.jit(
      jax.grad(lambda p: jnp.sum(jnp.square(generator.apply({
          **variables, 'params': p
      }, z, pitch, train=False)))))(variables['params'])
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(np.abs(grads['pitch_embedding']['embedding']).max()) > 0


@pytest.mark.slow
def test_discriminator_pitch_head_classifies_and_is_spectrally_normalised():
  discriminator = discriminator_lib.Discriminator(dim=2, num_pitches=NUM_PITCHES, classify_pitch=True)
  _, pitch = _inputs()
  audio = jnp.tanh(jax.random.normal(jax.random.key(2), (3, LENGTH)))
  variables = _init(discriminator, audio, pitch, train=False)
  assert 'pitch_classifier_sn' in variables['batch_stats']
  logits, pitch_logits = jax.jit(lambda v: discriminator.apply(v, audio, pitch, train=False))(variables)
  assert logits.shape == (3,) and pitch_logits.shape == (3, NUM_PITCHES)


@pytest.mark.slow
def test_discriminator_harmonic_branch_trains_and_sees_the_partials():
  """With harmonic_bands, two more spectrally normalised convolutions read the notes' harmonic bands at their
  pitch; gradients stay finite, and D's features (so its logits) tell a sine from a tone with the same fundamental
  and partials above it, where the bands differ."""
  discriminator = discriminator_lib.Discriminator(dim=2, num_pitches=NUM_PITCHES, harmonic_bands=8, pitch_min=58)
  pitch = jnp.array([2, 2, 4], jnp.int32)  # MIDI 60, 60, 62.
  t = np.arange(LENGTH) / 16000
  f0 = 440.0 * 2**((np.array([60, 60, 62]) - 69) / 12)
  sine = 0.5 * np.sin(2 * np.pi * f0[:, None] * t)
  rich = sine + sum(0.5 / k * np.sin(2 * np.pi * k * f0[:, None] * t) for k in range(2, 6))
  audio = jnp.asarray(np.stack([sine[0], rich[1], sine[2]]), jnp.float32)
  variables = _init(discriminator, audio, pitch, train=False)
  assert {'bands_conv0', 'bands_conv1'} <= set(variables['params']) and len(variables['batch_stats']) == 9
  assert variables['params']['bands_conv0']['kernel'].shape == (3, 8, 8)
  grads = jax.jit(jax.grad(lambda a: jnp.sum(discriminator.apply(variables, a, pitch, train=False))))(audio)
  assert bool(np.all(np.isfinite(grads)))
  params = dict(variables['params'])
  params['conv4'] = jax.tree.map(jnp.zeros_like, params['conv4'])  # The waveform branch's features all 0.
  logits = np.asarray(
      jax.jit(lambda v: discriminator.apply(v, audio, pitch, train=False))({
          **variables, 'params': params
      }))
  assert abs(logits[0] - logits[1]) > 1e-3  # The bands alone tell the rich tone from the sine.
  with pytest.raises(ValueError, match='pitch_min'):
    _init(discriminator_lib.Discriminator(dim=2, num_pitches=NUM_PITCHES, harmonic_bands=8), audio, pitch, train=False)


def test_face_space_fits_the_principal_directions_and_generator_hears_only_them():
  """fit_face_space: the mean and the first K principal directions (orthonormal, largest variance first); G with
  face_components gives a face and the same face moved off those directions the same note, and a face moved
  along them another note."""
  rng = np.random.default_rng(0)
  # 60 faces in 16 dimensions, varying along three known directions of decreasing spread, plus a little noise.
  directions = np.linalg.qr(rng.normal(size=(16, 16)))[0]
  faces = 0.5 + rng.normal(size=(60, 3)) * [3.0, 2.0, 1.0] @ directions[:, :3].T + 1e-3 * rng.normal(size=(60, 16))
  space = generator_lib.fit_face_space(faces, 3)
  assert space['mean'].shape == (16,) and space['basis'].shape == (16, 3) and space['basis'].dtype == np.float32
  np.testing.assert_allclose(space['basis'].T @ space['basis'], np.eye(3), atol=1e-5)
  # The span of the three directions, largest variance first.
  np.testing.assert_allclose(space['basis'] @ space['basis'].T, directions[:, :3] @ directions[:, :3].T, atol=1e-3)
  variance = np.var((faces - space['mean']) @ space['basis'], axis=0)
  assert variance[0] > variance[1] > variance[2] > 0.5
  # Hosts holding shares of the faces combine their statistics into those of all the faces.
  whole = generator_lib.face_statistics(faces)
  combined = generator_lib.combine_face_statistics(
      [generator_lib.face_statistics(faces[:7]),
       generator_lib.face_statistics(faces[7:])])
  for name in ('count', 'mean', 'scatter'):
    np.testing.assert_allclose(combined[name], whole[name], rtol=1e-10, atol=1e-10, err_msg=name)
  with pytest.raises(ValueError, match='components <= 16'):
    generator_lib.fit_face_space(faces, 17)
  with pytest.raises(ValueError, match='at least 2 faces'):
    generator_lib.fit_face_space(faces[:1], 2)
  with pytest.raises(ValueError, match='NaN or infinite'):
    generator_lib.fit_face_space(np.where(np.arange(16) == 3, np.nan, faces), 2)

  generator = generator_lib.HarmonicGenerator(num_pitches=NUM_PITCHES, pitch_min=60, length=1024, sample_rate=16000,
                                              hidden=8, channels=8, num_harmonics=4, noise_bands=3, frames=4,
                                              face_components=3)
  z = jnp.asarray(faces[:2], jnp.float32)
  pitch = jnp.zeros(2, jnp.int32)
  variables = _init(generator, z, pitch, train=False)
  # Fresh variables (no fit yet) keep the first 3 coordinates: faces still differ there.
  np.testing.assert_array_equal(variables['face_space']['basis'], np.eye(16, 3))
  np.testing.assert_array_equal(variables['face_space']['mean'], np.zeros(16))
  variables = {'params': _random_params(variables['params']), 'face_space': space}
  apply = jax.jit(lambda v, z: generator.apply(v, z, pitch, train=False))
  off = jnp.asarray(directions[:, 5] - directions[:, 9], jnp.float32)  # Orthogonal to the faces' directions.
  along = jnp.asarray(directions[:, 0], jnp.float32)
  # Equal but for float32 rounding and the fitted basis's tilt by the faces' small noise.
  np.testing.assert_allclose(apply(variables, z + off), apply(variables, z), atol=1e-4)
  assert float(jnp.max(jnp.abs(apply(variables, z + along) - apply(variables, z)))) > 1e-2
