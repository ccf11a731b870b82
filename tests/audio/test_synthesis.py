"""The harmonic-plus-noise synthesiser: in tune, nothing above Nyquist, noise as specified, differentiable."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax.audio import listening
from face2music_jax.audio import synthesis
from face2music_jax.models import generator as g_lib
from tests import helpers

SR, LENGTH = 16000, 8192

# The synthesiser's functions jitted, as the generator calls them: one compilation per shape instead of one per
# operation of an eager call (about 100 for `controls` and `synthesize`, 9 s of a 12 s test here).
harmonic_synth = jax.jit(synthesis.harmonic_synth, static_argnums=(3, 4), static_argnames=('max_hz',))
filtered_noise = jax.jit(synthesis.filtered_noise, static_argnums=(1, 2))
controls = jax.jit(synthesis.controls,
                   static_argnames=('length', 'sample_rate', 'noise_max', 'relative_noise', 'fundamental_floor'))
synthesize = jax.jit(synthesis.synthesize, static_argnames=('length', 'sample_rate', 'release_s'))
attack_decay_envelope = jax.jit(synthesis.attack_decay_envelope, static_argnums=(3, 4))


def _energy_off_harmonics(audio: np.ndarray, f0: float, width_hz: float = 20.0) -> float:
  """Fraction of the (Hann-windowed) spectrum's energy farther than width_hz from every multiple of f0."""
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))**2
  freqs = np.fft.rfftfreq(len(audio), 1 / SR)
  nearest = np.round(freqs / f0) * f0
  off = (np.abs(freqs - nearest) > width_hz) | (nearest == 0)
  return float(spectrum[off].sum() / spectrum.sum())


@pytest.mark.parametrize('midi', [36, 48, 60, 72])
def test_harmonic_synth_plays_the_requested_pitch(midi):
  frames, k = LENGTH // 64, 20
  rng = np.random.default_rng(midi)
  # A timbre constant over the note (a distribution changing every frame would modulate it into sidebands).
  distribution = jnp.broadcast_to(jnp.asarray(rng.uniform(0, 1, k) / np.arange(1, k + 1), jnp.float32), (1, frames, k))
  amplitudes = jnp.full((1, frames), 0.1)
  f0 = synthesis.midi_to_hz(jnp.array([float(midi)]))
  audio = np.asarray(harmonic_synth(f0, amplitudes, distribution, LENGTH, SR))
  m = listening.measure(audio, [midi], SR)
  assert m['in_tune_50c'] == 1.0 and m['abs_cents'] < 5, m
  assert _energy_off_harmonics(audio[0], float(f0[0])) < 1e-3


def test_partials_at_or_above_nyquist_are_silent():
  """f0 = 3000 Hz with 8 partials: only 3000 and 6000 Hz may sound; 9000 Hz would alias to 7000 Hz, 12000 to
  4000 Hz, 15000 to 1000 Hz."""
  frames = LENGTH // 64
  f0 = jnp.array([3000.0])
  audio = np.asarray(harmonic_synth(f0, jnp.full((1, frames), 0.5), jnp.ones((1, frames, 8)), LENGTH, SR))
  assert _energy_off_harmonics(audio[0], 3000.0) < 1e-4
  spectrum = np.abs(np.fft.rfft(audio[0] * np.hanning(LENGTH)))**2
  freqs = np.fft.rfftfreq(LENGTH, 1 / SR)
  for alias in (1000.0, 4000.0, 7000.0):
    near = np.abs(freqs - alias) < 50
    assert spectrum[near].sum() < 1e-6 * spectrum.sum(), alias
  # The two audible partials share the amplitude equally (the distribution is renormalised over them).
  for f in (3000.0, 6000.0):
    assert spectrum[np.abs(freqs - f) < 50].sum() > 0.4 * spectrum.sum()


def test_partials_at_or_above_max_hz_are_silent_and_the_others_share_the_amplitude():
  """max_hz = 2600 with f0 = 500 Hz and 16 partials: only 500-2500 Hz sound, each with a fifth of the energy; with
  max_hz 0 every partial below Nyquist sounds. The generator's max_partial_hz reaches the oscillator bank."""
  frames = LENGTH // 64
  f0, amplitudes, distribution = jnp.array([500.0]), jnp.full((1, frames), 0.5), jnp.ones((1, frames, 16))
  freqs = np.fft.rfftfreq(LENGTH, 1 / SR)
  for max_hz, sounding in ((2600.0, 5), (0.0, 15)):
    audio = np.asarray(harmonic_synth(f0, amplitudes, distribution, LENGTH, SR, max_hz=max_hz))[0]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(LENGTH)))**2
    shares = np.array([spectrum[np.abs(freqs - 500.0 * k) < 50].sum() for k in range(1, 17)]) / spectrum.sum()
    np.testing.assert_allclose(shares[:sounding], 1 / sounding, rtol=0.02)
    assert np.all(shares[sounding:] < 1e-6), max_hz
  config = _harmonic_config()
  config.model.harmonic.max_partial_hz = 700.0  # Above the tiny config's top note (MIDI 60, 262 Hz).
  config_lib.validate(config)
  capped = g_lib.make_generator(config)
  assert capped.max_partial_hz == 700.0
  config.model.harmonic.max_partial_hz = 0.0
  uncapped = g_lib.make_generator(config)
  z, pitch = jax.random.normal(jax.random.key(1), (2, config.data.embedding_dim)), jnp.array([0, 12])
  variables = _init(uncapped, z, pitch)
  lines = {}
  for name, generator in (('capped', capped), ('uncapped', uncapped)):
    audio = np.asarray(generator.apply(variables, z, pitch, train=False))
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(LENGTH), axis=-1))**2
    f = np.asarray(listening.midi_to_hz(config_lib.midi_pitch(config, np.asarray(pitch))))
    # The energy on the partials at or above 700 Hz, of each note's energy on its partials.
    on = [np.abs(freqs - np.round(freqs / fi) * fi) < 3 for fi in f]
    lines[name] = [spectrum[i, on[i] & (freqs >= 700 - 3)].sum() / spectrum[i, on[i]].sum() for i in range(2)]
  assert min(lines['uncapped']) > 0.05 and max(lines['capped']) < 1e-3 * min(lines['uncapped']), lines


def test_envelope_at_harmonics_is_a_function_of_frequency():
  """Bands at 100, 200, 400, 800 Hz (low 100, high 800, 4 bands: one per octave). A harmonic on a band takes its
  value, one between two bands the log-frequency interpolation, one beyond the ends the end value; a note an octave
  up reads the same envelope, so its harmonic k equals harmonic 2k of the lower note."""
  bands = jnp.array([[[0.0, 1.0, 3.0, -2.0]], [[0.0, 1.0, 3.0, -2.0]]])  # [B 2, F 1, M 4]
  out = np.asarray(synthesis.envelope_at_harmonics(bands, jnp.array([100.0, 200.0]), 10, 100.0, 800.0))
  np.testing.assert_allclose(out[0, 0, [0, 1, 3, 7]], [0.0, 1.0, 3.0, -2.0], atol=1e-5)  # 100, 200, 400, 800 Hz.
  np.testing.assert_allclose(out[0, 0, 2], 1.0 + 2.0 * np.log2(1.5), atol=1e-5)  # 300 Hz: 0.585 of 200 -> 400.
  np.testing.assert_allclose(out[0, 0, 8:], -2.0, atol=1e-6)  # 900, 1000 Hz: the last band's value.
  np.testing.assert_allclose(out[1, 0, :5], out[0, 0, 1:10:2], atol=1e-5)  # 200..1000 Hz either way.
  with pytest.raises(ValueError, match='at least 2 bands'):
    synthesis.envelope_at_harmonics(bands[..., :1], jnp.array([100.0, 200.0]), 10, 100.0, 800.0)


def test_generator_with_envelope_bands_gives_notes_an_octave_apart_the_same_spectral_envelope():
  """With envelope_bands, G's harmonics head has that many outputs, and given one envelope (the head's kernel zeroed,
  its bias a chosen envelope; one distribution per note, no fundamental floor) the note at MIDI 60 holds its partials
  in the ratios of the note at MIDI 48 at the same frequencies."""
  config = _harmonic_config()
  h = config.model.harmonic
  h.envelope_bands, h.steady_harmonics, h.fundamental_floor, h.fundamental_floor_high = 12, True, 0.0, 0.0
  h.noise_max = 1e-4
  config_lib.validate(config)
  generator = g_lib.make_generator(config)
  assert generator.envelope_bands == 12
  z = jnp.tile(jax.random.normal(jax.random.key(2), (1, config.data.embedding_dim)), (2, 1))
  pitch = jnp.array([0, 12])  # MIDI 48 and 60 in the tiny config.
  variables = _init(generator, z, pitch)
  head = variables['params']['harmonics']
  assert head['kernel'].shape[-1] == 12
  head['kernel'] = jnp.zeros_like(head['kernel'])
  head['bias'] = jnp.array([0.0, 0.5, 1.0, 0.2, -0.5, 0.8, 1.5, 0.0, -1.0, 0.3, 0.1, -0.2])
  audio = np.asarray(generator.apply(variables, z, pitch, train=False))
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(LENGTH), axis=-1))**2
  freqs = np.fft.rfftfreq(LENGTH, 1 / SR)
  f48 = float(listening.midi_to_hz(48))
  # The energy of the partials at 2, 4, 6 and 8 x f48 in both notes (harmonics 2, 4, 6, 8 of MIDI 48; 1-4 of 60).
  lines = np.array([[spectrum[i, np.abs(freqs - m * f48) < 8].sum() for m in (2, 4, 6, 8)] for i in range(2)])
  np.testing.assert_allclose(lines[1] / lines[1].sum(), lines[0] / lines[0].sum(), rtol=0.02)


def test_amplitudes_ramp_linearly_between_frames():
  """A sine whose amplitude goes from 0 to 1 over one frame follows the ramp sample by sample."""
  frames = LENGTH // 64
  amplitudes = jnp.zeros((1, frames)).at[0, 1:].set(1.0)
  f0 = jnp.array([250.0])
  audio = np.asarray(harmonic_synth(f0, amplitudes, jnp.ones((1, frames, 1)), LENGTH, SR))[0]
  n = np.arange(LENGTH)
  envelope = np.clip(n / 64.0, 0.0, 1.0)
  np.testing.assert_allclose(audio, envelope * np.sin(2 * np.pi * 250.0 * n / SR), atol=1e-4)


def test_filtered_noise_level_and_band_limit():
  hop, frames = 64, LENGTH // 64 + 1
  flat = np.asarray(filtered_noise(jnp.full((1, frames, 65), 0.2), LENGTH, hop))[0]
  assert 0.8 * 0.2 < flat.std() < 0.95 * 0.2  # ~0.87 m for a constant response m
  low = np.zeros((1, frames, 65), np.float32)
  low[..., :17] = 1.0  # Bins 0-16 of 65: up to 2 kHz; linear interpolation leaves bin 17 at 0.
  audio = np.asarray(filtered_noise(jnp.asarray(low), LENGTH, hop))[0]
  spectrum = np.abs(np.fft.rfft(audio))**2
  freqs = np.fft.rfftfreq(LENGTH, 1 / SR)
  # The Hann-windowed frames leak a little past the band edge; above 3 kHz almost nothing remains.
  assert spectrum[freqs > 3000].sum() < 1e-3 * spectrum.sum()
  with pytest.raises(ValueError, match='frames'):
    filtered_noise(jnp.ones((1, frames - 1, 65)), LENGTH, hop)


@pytest.mark.slow
def test_synthesis_gradients_are_finite_and_nonzero():
  frames = LENGTH // 64

  def loss(amplitudes, distribution, noise):
    f0 = jnp.array([110.0, 440.0])
    audio = (harmonic_synth(f0, amplitudes, distribution, LENGTH, SR) + filtered_noise(noise, LENGTH, 64))
    return jnp.sum(jnp.square(audio[:, 100:2000]))

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.full((2, frames), 0.3), jnp.ones((2, frames, 16)),
                                                     jnp.full((2, frames + 1, 33), 0.01))
  for grad in grads:
    assert np.all(np.isfinite(grad)) and float(np.abs(grad).max()) > 0


def _init(generator, z, pitch):
  """Jitted init: an eager one compiles every operation of the forward pass separately."""
  return jax.jit(lambda key: generator.init(key, z, pitch, train=False))(jax.random.key(1))


def _harmonic_config():
  config = helpers.tiny_config('aux')
  config.model.generator = 'harmonic'
  return config


def test_normalize_rms_sets_each_notes_level_and_leaves_silence_silent():
  rng = np.random.default_rng(0)
  notes = np.stack([0.3 * rng.normal(size=800), 0.01 * rng.normal(size=800), np.zeros(800)]).astype(np.float32)
  out = np.asarray(synthesis.normalize_rms(jnp.asarray(notes), 0.07))
  np.testing.assert_allclose(np.sqrt(np.mean(out[:2]**2, axis=-1)), 0.07, rtol=1e-3)
  np.testing.assert_allclose(out[0] / notes[0], out[0][0] / notes[0][0], rtol=1e-5)  # One gain per note.
  assert not np.any(out[2])
  assert synthesis.normalize_rms(notes, 0.0) is notes


@pytest.mark.parametrize('generator_name', ['harmonic', 'wavegan'])
def test_generators_write_notes_at_the_configured_rms(generator_name):
  config = _harmonic_config()
  config.model.generator, config.audio.note_rms = generator_name, 0.05
  generator = g_lib.make_generator(config)
  z = jax.random.normal(jax.random.key(0), (3, config.data.embedding_dim))
  pitch = jnp.array([0, 4, 8])
  audio = np.asarray(jax.jit(lambda v: generator.apply(v, z, pitch, train=False))(_init(generator, z, pitch)))
  np.testing.assert_allclose(np.sqrt(np.mean(audio**2, axis=-1)), 0.05, rtol=1e-3)


@pytest.mark.slow
def test_harmonic_generator_is_in_tune_for_every_face_and_pitch():
  """With controls held constant over the note (the frame convolutions zeroed, so each block passes on only its
  FiLM shift, a function of face and pitch), a note's energy lies on multiples of the requested f0 (the smooth
  envelope barely widens the lines): the network sets timbre, never the pitch."""
  config = _harmonic_config()
  generator = g_lib.make_generator(config)
  assert isinstance(generator, g_lib.HarmonicGenerator)
  z = jax.random.normal(jax.random.key(0), (4, config.data.embedding_dim))
  pitch = jnp.array([0, 4, 8, 12])  # MIDI 48, 52, 56, 60 in the tiny config.
  variables = _init(generator, z, pitch)
  # The running statistics of the face standardisation, the face space (model.harmonic.face_components).
  assert set(variables) == {'params', 'batch_stats', 'face_space'}
  apply = jax.jit(lambda v, z: generator.apply(v, z, pitch, train=False))
  audio = np.asarray(apply(variables, z))
  assert audio.shape == (4, config.audio.length) and np.all(np.isfinite(audio))
  params = dict(variables['params'])
  for i in range(config.model.harmonic.num_blocks):
    params[f'conv{i}'] = jax.tree.map(jnp.zeros_like, params[f'conv{i}'])
  steady = np.asarray(apply({**variables, 'params': params}, z))
  for clip, p in zip(steady, np.asarray(pitch)):
    f0 = float(listening.midi_to_hz(config_lib.midi_pitch(config, p)))
    assert _energy_off_harmonics(clip, f0) < 1e-3
  # The face changes the note: two faces at one pitch differ.
  other = np.asarray(apply(variables, -z))
  assert np.abs(other - audio).max() > 1e-3 * np.abs(audio).max()


@pytest.mark.slow
def test_harmonic_generator_gradients_reach_every_parameter():
  config = _harmonic_config()
  generator = g_lib.make_generator(config)
  z = jax.random.normal(jax.random.key(0), (4, config.data.embedding_dim))
  pitch = jnp.array([0, 3, 6, 9])
  variables = _init(generator, z, pitch)

  def loss(p):
    audio, _ = generator.apply({**variables, 'params': p}, z, pitch, train=True, mutable=['batch_stats'])
    return jnp.sum(jnp.square(audio))

  grads = jax.jit(jax.grad(loss))(variables['params'])
  for path, grad in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(grad)), path
    assert float(np.abs(grad).max()) > 0, jax.tree_util.keystr(path)


def test_attack_decay_envelope():
  env = np.asarray(attack_decay_envelope(jnp.array([[0.005]]), jnp.array([[0.1]]), jnp.array([[0.25]]), SR, SR))[0]
  t = np.arange(SR) / SR
  np.testing.assert_allclose(env, (1 - np.exp(-t / 0.005)) * (0.25 + 0.75 * np.exp(-t / 0.1)), atol=1e-6)
  assert env[0] == 0.0 and env.max() < 1.0 and abs(env[-1] - 0.25) < 1e-3


def test_harmonic_generator_rejects_a_length_its_frames_cannot_tile():
  generator = g_lib.HarmonicGenerator(num_pitches=4, pitch_min=60, length=8008, sample_rate=SR)
  with pytest.raises(ValueError, match='divisible'):
    generator.init(jax.random.key(0), jnp.zeros((1, 8)), jnp.zeros((1,), jnp.int32), train=False)


@pytest.mark.slow
def test_relative_noise_bounds_the_noise_by_the_harmonics():
  """With the noise bands driven to their bound (bias +30), absolute noise (DDSP's max 2) buries the tone, while
  relative noise with noise_max 0.05 keeps most of the note's energy on the harmonics whatever the network
  learns: noise power <= (0.87 * 0.05 A)^2 against at least A^2 / (2 K) for the tone (K = 64 equal harmonics,
  the worst case, at initialisation), so under a fifth of the energy lies off the harmonics."""
  z = jax.random.normal(jax.random.key(0), (3, 8))
  pitch = jnp.array([0, 5, 11])
  off = {}
  for relative, noise_max in ((False, 2.0), (True, 0.05)):
    generator = g_lib.HarmonicGenerator(num_pitches=12, pitch_min=48, length=8192, sample_rate=SR, noise_max=noise_max,
                                        relative_noise=relative)
    params = dict(_init(generator, z, pitch)['params'])
    params['noise'] = {**params['noise'], 'bias': params['noise']['bias'] + 30.0}
    audio = np.asarray(jax.jit(lambda p, g=generator: g.apply({'params': p}, z, pitch, train=False))(params))
    off[relative] = max(
        _energy_off_harmonics(clip, float(listening.midi_to_hz(p + 48))) for clip, p in zip(audio, np.asarray(pitch)))
  assert off[False] > 0.5
  assert off[True] < 0.2


@pytest.mark.slow
def test_the_face_input_is_standardised_so_its_scale_and_offset_do_not_matter():
  """In training G standardises each dimension of f(x) over the batch: a batch of faces scaled down and shifted
  (as a dlib embedding's small, offset dimensions are) gives the same notes (up to batch norm's epsilon, 1e-5 on the
  variance); the running statistics, which eval mode uses, follow the batch's."""
  config = _harmonic_config()
  generator = g_lib.make_generator(config)
  z = jax.random.normal(jax.random.key(0), (8, config.data.embedding_dim))
  pitch = jnp.full((8,), 6)
  variables = _init(generator, z, pitch)
  small = 0.2 * z + 0.3
  train = jax.jit(lambda z: generator.apply(variables, z, pitch, train=True, mutable=['batch_stats']))
  a, _ = train(z)
  b, updated = train(small)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3 * float(np.abs(a).max()))
  mean = updated['batch_stats']['face_norm']['mean']
  space = variables['face_space']  # Standardised after the projection onto the face space.
  projected = space['mean'] + ((small - space['mean']) @ space['basis']) @ space['basis'].T
  np.testing.assert_allclose(np.asarray(mean), 0.01 * np.asarray(jnp.mean(projected, axis=0)), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_steady_harmonics_keep_the_partials_relative_levels_over_the_note():
  """With steady_harmonics the harmonic distribution is one per note: the levels of a note's two strongest partials
  relative to each other hold over the note (the overall amplitude may still move), while a distribution per
  control frame lets them swing. The harmonic heads' weights are scaled up, so that an untrained network's controls
  vary as a trained one's can."""
  z = jax.random.normal(jax.random.key(0), (3, 8))
  pitch = jnp.array([0, 5, 11])
  freqs = librosa.fft_frequencies(sr=SR, n_fft=2048)
  swing = {}
  for steady in (False, True):
    generator = g_lib.HarmonicGenerator(num_pitches=12, pitch_min=48, length=8192, sample_rate=SR, noise_max=0.05,
                                        relative_noise=True, steady_harmonics=steady)
    params = dict(_init(generator, z, pitch)['params'])
    params['harmonics'] = {**params['harmonics'], 'kernel': 4.0 * params['harmonics']['kernel']}
    audio = np.asarray(jax.jit(lambda p, g=generator: g.apply({'params': p}, z, pitch, train=False))(params))
    swings = []
    for clip, p in zip(audio, np.asarray(pitch)):
      f0 = float(listening.midi_to_hz(p + 48))
      spectrum = np.abs(librosa.stft(clip, n_fft=2048, hop_length=256))[:, 4:-8]  # After the attack, before the end.
      levels = np.stack([20 * np.log10(spectrum[np.argmin(np.abs(freqs - k * f0))] + 1e-9) for k in range(1, 9)])
      second, first = np.argsort(levels.mean(axis=1))[-2:]  # The strongest last.
      ratio = levels[first] - levels[second]
      swings.append(float(ratio.max() - ratio.min()))
    swing[steady] = max(swings)
  # Here 1.0 dB against 36 dB: what remains is the noise and the analysis window over the amplitude's ramps.
  assert swing[True] < 3.0, swing
  assert swing[False] > 10.0, swing


def test_release_window_and_fundamental_floor():
  window = synthesis.release_window(8192, 16000, 0.05)
  assert np.all(window[:8192 - 800] == 1) and window[-1] == 0 and np.all(np.diff(window[-800:]) <= 0)
  assert window[-160:].max() <= 10**(-30 / 20)  # The last 10 ms at least 30 dB down.
  assert np.all(synthesis.release_window(100, 16000, 0.0) == 1)
  weights = jnp.array([[0.0, 1.0, 1.0, 2.0]])
  floored = np.asarray(synthesis.with_fundamental(weights, 0.2))
  np.testing.assert_allclose(floored, [[0.2, 0.2, 0.2, 0.4]], atol=1e-6)
  assert synthesis.with_fundamental(weights, 0.0) is weights
  # One floor per note: each note as with its own number.
  per_note = jnp.stack([weights, 2 * weights])
  floors = jnp.array([0.2, 0.5])[:, None, None]
  np.testing.assert_allclose(np.asarray(synthesis.with_fundamental(per_note, floors)),
                             np.stack([floored, np.asarray(synthesis.with_fundamental(2 * weights, 0.5))]), atol=1e-7)


def test_the_fundamental_floor_rises_with_pitch_where_asked():
  """fundamental_floor_high: notes at or below the rise's first pitch are those of the plain floor (the same
  parameters); above it the fundamental carries more of the amplitude, the most at and above the second pitch."""
  z = jax.random.normal(jax.random.key(0), (4, 8))
  pitch = jnp.array([0, 12, 18, 24])  # MIDI 48, 60, 66, 72.
  kwargs = dict(num_pitches=25, pitch_min=48, length=8192, sample_rate=SR, noise_max=0.05, relative_noise=True,
                fundamental_floor=0.2)
  plain = g_lib.HarmonicGenerator(**kwargs)
  rising = g_lib.HarmonicGenerator(**kwargs, fundamental_floor_high=0.8, fundamental_floor_pitches=(60, 72))
  params = _init(plain, z, pitch)
  apply = jax.jit(lambda g, v: g.apply(v, z, pitch, train=False), static_argnums=0)
  a, b = np.asarray(apply(plain, params)), np.asarray(apply(rising, params))
  np.testing.assert_allclose(a[:2], b[:2], atol=1e-7)

  def fundamental_share(audio, midi):  # The fundamental's share of the energy at the harmonics.
    spectrum = np.abs(np.fft.rfft(audio[2048:6144] * np.hanning(4096)))**2
    f0 = listening.midi_to_hz(midi)
    bins = [int(round(k * f0 * 4096 / SR)) for k in range(1, int(SR / 2 / f0))]
    energy = [spectrum[b - 2:b + 3].sum() for b in bins]
    return energy[0] / sum(energy)

  shares = [(fundamental_share(a[i], m), fundamental_share(b[i], m)) for i, m in ((2, 66), (3, 72))]
  assert shares[0][1] > shares[0][0] and shares[1][1] > shares[1][0], shares
  # At MIDI 72 the fundamental holds at least 0.8 of the amplitude: at least 0.8^2 / (0.8^2 + 0.2^2) of the energy
  # where the rest lies on one partial, more where it is spread.
  assert shares[1][1] > 0.9, shares
  # The config's fields reach the generator.
  config = _harmonic_config()
  config.model.harmonic.fundamental_floor_high, config.model.harmonic.fundamental_floor_pitches = 0.6, (50, 58)
  made = g_lib.make_generator(config_lib.validate(config))
  assert (made.fundamental_floor_high, made.fundamental_floor_pitches) == (0.6, (50, 58))


def test_controls_bound_every_output_whatever_the_network_says():
  """synthesis.controls owns every scaling of the network's raw outputs: extreme raw values stay in range."""
  rng = np.random.default_rng(0)
  batch, frames, harmonics, bands, length = 3, 16, 64, 32, 8192
  raw = {
      'amplitude': 30.0 * rng.normal(size=(batch, frames, 1)),
      'harmonics': 30.0 * rng.normal(size=(batch, frames, harmonics)),
      'noise': 30.0 * rng.normal(size=(batch, frames, bands)),
      'envelope': np.array([[-50.0, -50.0, -50.0], [50.0, 50.0, 50.0], [0.0, 0.0, 0.0]]),
  }
  raw = {k: jnp.asarray(v, jnp.float32) for k, v in raw.items()}
  jax_c = controls(raw, length=length, sample_rate=16000, noise_max=2.0, relative_noise=True, fundamental_floor=0.2)
  c = {k: np.asarray(v) for k, v in jax_c.items()}
  assert c['amplitude'].shape == (batch, frames) and c['noise'].shape == (batch, frames + 1, bands)
  assert c['distribution'].shape == (batch, frames, harmonics) and c['envelope'].shape == (batch, length)
  assert float(c['amplitude'].min()) > 0 and float(c['amplitude'].max()) <= 2.0 + 1e-6
  np.testing.assert_allclose(c['distribution'].sum(-1), 1.0, rtol=1e-5)
  assert float(c['distribution'][..., 0].min()) >= 0.2 - 1e-6
  assert float(c['noise'].min()) >= 0 and float(c['noise'].max()) <= 2.0 * 2.0 + 1e-5  # Relative: x amplitude <= 2.
  assert float(c['envelope'].min()) >= 0 and float(c['envelope'].max()) <= 1.0
  audio = np.asarray(
      synthesize(jax_c, synthesis.midi_to_hz(np.array([36.0, 60.0, 72.0])), length, 16000, release_s=0.05))
  assert audio.shape == (batch, length) and np.all(np.isfinite(audio))
  assert float(np.abs(audio[:, -1]).max()) == 0.0  # The release ends in silence.


def test_sin_cycles_is_within_5e_7_of_sin_and_so_is_its_derivative():
  cycles = np.concatenate([np.linspace(-3.0, 3.0, 200_001), np.random.default_rng(0).uniform(0, 64, 200_000)])
  x = jnp.asarray(cycles, jnp.float32)
  exact = np.sin(2 * np.pi * np.asarray(x, np.float64))
  assert float(np.abs(np.asarray(jax.jit(synthesis.sin_cycles)(x), np.float64) - exact).max()) < 5e-7
  grad = jax.jit(jax.vmap(jax.grad(synthesis.sin_cycles)))(x)
  np.testing.assert_allclose(grad, 2 * np.pi * np.cos(2 * np.pi * np.asarray(x, np.float64)), atol=5e-6)


def _sum_of_sines(f0_hz, amplitudes, distribution, length, sample_rate, phases=None):
  """The oscillator bank written out: every partial's sine and linearly ramped amplitude at every sample, its
  phases computed in float64 (f0_hz is a numpy array) plus its start phase (phases [B, K] in cycles, or 0)."""
  batch, frames, num_harmonics = distribution.shape
  hop = length // frames
  k = np.arange(1, num_harmonics + 1)
  distribution = distribution * (k * f0_hz[:, None] < sample_rate / 2)[:, None, :]
  distribution = distribution / jnp.maximum(jnp.sum(distribution, axis=-1, keepdims=True), 1e-7)
  partials = amplitudes[..., None] * distribution
  following = jnp.concatenate([partials[:, 1:], partials[:, -1:]], axis=1)
  ramp = (np.arange(length) % hop / hop)[None, :, None].astype(np.float32)
  per_sample = jnp.repeat(partials, hop, axis=1) * (1 - ramp) + jnp.repeat(following, hop, axis=1) * ramp
  cycles = np.mod(np.float64(f0_hz)[:, None, None] * np.arange(length)[None, :, None] * k / sample_rate, 1.0)
  if phases is None:
    return jnp.sum(per_sample * np.sin(2 * np.pi * cycles).astype(np.float32), axis=-1)
  # Differentiable in the start phases: sin(a + b) = sin a cos b + cos a sin b, the float64 parts as constants.
  start = 2 * np.pi * phases[:, None, :]
  return jnp.sum(
      per_sample * (np.sin(2 * np.pi * cycles).astype(np.float32) * jnp.cos(start) +
                    np.cos(2 * np.pi * cycles).astype(np.float32) * jnp.sin(start)), axis=-1)


@pytest.mark.parametrize('start_phases', [False, True])
def test_the_harmonic_bank_is_the_sum_of_its_partials_sines_and_so_is_its_gradient(start_phases):
  """The bank's matrix product per note gives the notes and gradients of the written-out sum of K sines with
  float64 phases, within 1e-4 of the peak; pitches from 33 Hz (all 64 partials audible) to 1 kHz (partials from the
  8th on above Nyquist); with every partial starting at phase 0 or at its own start phase (any real number of
  cycles), and then the gradient with respect to the start phases too."""
  rng = np.random.default_rng(0)
  frames, num_harmonics = 16, 64
  f0 = synthesis.midi_to_hz(np.array([24.0, 36.0, 48.0, 60.0, 72.0, 84.0])).astype(np.float32)
  amplitudes = jnp.asarray(rng.uniform(0, 1, (6, frames)), jnp.float32)
  distribution = jnp.asarray(rng.uniform(0, 1, (6, frames, num_harmonics))**4, jnp.float32)
  phases = jnp.asarray(rng.uniform(-3, 3, (6, num_harmonics)), jnp.float32) if start_phases else None
  want = np.asarray(_sum_of_sines(f0, amplitudes, distribution, LENGTH, SR, phases))
  got = np.asarray(harmonic_synth(jnp.asarray(f0), amplitudes, distribution, LENGTH, SR, phases))
  assert np.all(np.abs(got - want).max(axis=1) < 1e-4 * np.abs(want).max(axis=1))
  if start_phases:  # The start phases matter: the same partials from phase 0 are another waveform.
    zero = np.asarray(harmonic_synth(jnp.asarray(f0), amplitudes, distribution, LENGTH, SR))
    assert np.all(np.abs(zero - want).max(axis=1) > 0.1 * np.abs(want).max(axis=1))
  weights = jnp.asarray(rng.standard_normal((6, LENGTH)), jnp.float32)
  argnums = (0, 1, 2) if start_phases else (0, 1)

  def gradient(synth, f0):
    return jax.jit(jax.grad(lambda a, d, p: jnp.sum(weights * synth(f0, a, d, LENGTH, SR, p)), argnums=argnums))

  for got, want in zip(
      gradient(synthesis.harmonic_synth, jnp.asarray(f0))(amplitudes, distribution, phases),
      gradient(_sum_of_sines, f0)(amplitudes, distribution, phases)):
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(np.asarray(want)).max()))


def test_start_phases_of_the_wrong_shape_are_refused():
  distribution = jnp.ones((2, 16, 8), jnp.float32)
  with pytest.raises(ValueError, match='start phases of shape'):
    synthesis.harmonic_synth(jnp.array([220.0, 440.0]), jnp.ones((2, 16)), distribution, 8192, SR, jnp.zeros((8,)))


def test_learned_phases_set_each_partials_start_phase_from_the_network():
  """With learned_phases, G's 'phases' head sets the partials' start phases: zeroed, the notes are those of the
  generator without it (the same other parameters); its initial bias is a random phase per partial, and its kernel
  alone moves the phases by what the face and pitch say."""
  z = jax.random.normal(jax.random.key(0), (3, 8))
  pitch = jnp.array([0, 5, 11])
  kwargs = dict(num_pitches=12, pitch_min=48, length=8192, sample_rate=SR, noise_max=0.05, relative_noise=True)
  plain = g_lib.HarmonicGenerator(**kwargs)
  phased = g_lib.HarmonicGenerator(**kwargs, learned_phases=True)
  params = dict(_init(phased, z, pitch)['params'])
  head = params['phases']
  assert head['bias'].shape == (64,) and 0 <= float(head['bias'].min()) and float(head['bias'].max()) < 1
  assert float(jnp.std(head['bias'])) > 0.2  # Spread over the cycle, not all alike.
  apply = jax.jit(lambda g, p: g.apply({'params': p}, z, pitch, train=False), static_argnums=0)
  zeroed = {**params, 'phases': jax.tree.map(jnp.zeros_like, head)}
  without = {k: v for k, v in params.items() if k != 'phases'}
  np.testing.assert_allclose(np.asarray(apply(phased, zeroed)), np.asarray(apply(plain, without)), atol=1e-6)
  audio, plain_audio = np.asarray(apply(phased, params)), np.asarray(apply(plain, without))
  assert np.abs(audio - plain_audio).max() > 0.1 * np.abs(audio).max()
  # The kernel alone (bias zeroed) moves the phases away from 0 by what the face and pitch say.
  kernel_only = {**params, 'phases': {**head, 'bias': jnp.zeros_like(head['bias'])}}
  assert np.abs(np.asarray(apply(phased, kernel_only)) - plain_audio).max() > 1e-3 * np.abs(plain_audio).max()
  # The same partials' magnitudes: the start phases change the waveform, not the spectrum's peaks.
  spectra = [np.abs(np.fft.rfft(a[0, 2048:6144] * np.hanning(4096))) for a in (audio, plain_audio)]
  f0 = listening.midi_to_hz(48)
  bin_ = int(round(f0 * 4096 / SR))
  np.testing.assert_allclose(spectra[0][bin_ - 2:bin_ + 3].max(), spectra[1][bin_ - 2:bin_ + 3].max(), rtol=0.05)
