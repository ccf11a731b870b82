"""The synthesiser's reach (evaluators/reach.py, scripts/synth_reach.py): fitting the synthesiser's controls to notes
within the config's bounds, and naming the fits' families."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax import stages
from face2music_jax.audio import synthesis
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import fidelity
from face2music_jax.evaluators import reach
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR = 16000


def _tone(hz: float, length: int = 8192) -> np.ndarray:
  return (0.3 * np.sin(2 * np.pi * hz * np.arange(length) / SR)).astype(np.float32)


def test_spectral_loss_is_zero_for_a_note_itself_and_grows_with_the_difference():
  a = jnp.asarray(np.stack([_tone(261.6), _tone(440.0)]))
  assert float(reach.spectral_loss(a, a)) == 0.0
  louder = float(reach.spectral_loss(a * 1.1, a))
  octave = float(reach.spectral_loss(jnp.asarray(np.stack([_tone(523.3), _tone(880.0)])), a))
  assert 0 < louder < octave
  with pytest.raises(ValueError, match='longer than the notes'):
    reach.spectral_loss(a[:, :1000], a[:, :1000])


def test_a_fit_recovers_notes_the_synthesiser_wrote():
  config = helpers.tiny_config()
  midi = np.array([48.0, 53.0, 57.0, 60.0], np.float32)
  raw = reach.initial_raw(config, 4)
  keys = jax.random.split(jax.random.key(0), len(raw))
  raw = {k: v + jax.random.normal(key, v.shape) for (k, v), key in zip(sorted(raw.items()), keys)}
  target = np.asarray(jax.jit(reach.synthesizer(config))(raw, jnp.asarray(midi)))
  start = reach.synthesizer(config)(reach.initial_raw(config, 4), jnp.asarray(midi))
  before = float(reach.spectral_loss(start, jnp.asarray(target)))
  fits, after = reach.fit(config, target, midi, steps=150)
  assert fits.shape == target.shape and np.all(np.isfinite(fits))
  assert after < 0.3 * before, (before, after)


def test_the_fit_keeps_the_configs_fundamental_floor():
  """A note an octave above the requested pitch (its tone all on harmonic 2, over a faint noise floor) is out of reach
  under a floor on the fundamental, and within reach without one."""
  midi = np.array([60.0, 60.0], np.float32)
  noise = 0.003 * np.random.default_rng(0).normal(size=8192).astype(np.float32)
  target = np.stack([_tone(2 * synthesis.midi_to_hz(60.0)) + noise] * 2)
  losses, shares = {}, {}
  for floor in (0.0, 0.45):
    config = helpers.tiny_config()
    config.model.harmonic.fundamental_floor = floor
    config.model.harmonic.fundamental_floor_high = 0.0
    fits, losses[floor] = reach.fit(config, target, midi, steps=300)
    spectrum = np.abs(np.fft.rfft(fits[0] * np.hanning(len(fits[0]))))
    f0_bin = int(round(synthesis.midi_to_hz(60.0) * len(fits[0]) / SR))
    shares[floor] = spectrum[f0_bin - 2:f0_bin + 3].max() / spectrum[2 * f0_bin - 2:2 * f0_bin + 3].max()
  # The fundamental over harmonic 2 in the fit's spectrum: the floor's amplitude ratio is 0.45 / 0.55 = 0.8.
  assert shares[0.45] > 0.5 > 0.05 > shares[0.0], shares
  assert losses[0.45] > 1.1 * losses[0.0], losses


def test_the_reach_refuses_what_it_cannot_fit():
  config = helpers.tiny_config()
  with pytest.raises(ValueError, match=r'notes \[N, 8192\]'):
    reach.fit(config, np.zeros((2, 100), np.float32), np.array([60.0, 60.0]), steps=1)
  config.model.generator = 'wavegan'
  with pytest.raises(ValueError, match="model.generator = 'harmonic'"):
    reach.fit(config, np.zeros((2, 8192), np.float32), np.array([60.0, 60.0]), steps=1)


@pytest.mark.parametrize('steady,envelope_bands', [(False, 0), (True, 0), (False, 6), (True, 6)])
def test_the_fitted_synthesiser_is_gs_after_its_network(steady, envelope_bands):
  """reach.synthesizer on the raw controls G's heads predict writes G's notes, with the rising floor, steady
  harmonics and a spectral envelope as the config sets them."""
  from face2music_jax.models import generator as g_lib  # pylint: disable=import-outside-toplevel
  config = helpers.tiny_config()
  config.model.harmonic.steady_harmonics = steady
  config.model.harmonic.envelope_bands = envelope_bands
  config.model.harmonic.fundamental_floor_pitches = (50, 58)  # The rise within the tiny pitch range (MIDI 48-60).
  generator = g_lib.make_generator(config)
  variables = g_lib.init_variables(generator, config.data.embedding_dim, jax.random.key(1))
  pitch = jnp.array([0, 4, 8, 12], jnp.int32)
  z = jax.random.normal(jax.random.key(2), (4, config.data.embedding_dim))
  audio, state = generator.apply(variables, z, pitch, train=False, capture_intermediates=True,
                                 mutable=['intermediates'])
  heads = state['intermediates']
  raw = {k: heads[k]['__call__'][0] for k in ('amplitude', 'harmonics', 'noise', 'envelope')}
  if steady:
    raw['harmonics'] = raw['harmonics'][:, None]
  assert raw['harmonics'].shape == reach.initial_raw(config, 4)['harmonics'].shape
  ours = reach.synthesizer(config)(raw, config_lib.midi_pitch(config, pitch).astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(audio), atol=1e-6)


@pytest.mark.slow
def test_the_script_names_real_notes_and_fits_by_the_runs_family_classifier(trained_tiny_workdir, tmp_path, capsys):
  spec = importlib.util.spec_from_file_location('synth_reach', os.path.join(ROOT, 'scripts', 'synth_reach.py'))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  out = str(tmp_path / 'reach.json')
  assert script.main([
      '--workdir', trained_tiny_workdir, '--per_family=2', '--steps=3', f'--out={out}',
      '--set=model.harmonic.noise_max=1.0'
  ]) == 0
  result = json.load(open(out))
  assert result['overrides'] == ['model.harmonic.noise_max=1.0'] and result['steps'] == 3
  assert 'effective families' in capsys.readouterr().out

  config = config_lib.load_config(trained_tiny_workdir)
  notes = inputs_lib.for_config(config).notes('train')
  families = config_lib.family_names(config)
  present = [f for i, f in enumerate(families) if np.any(notes['family'] == i)]
  assert sorted(result['families']) == sorted(present)
  for name, row in result['families'].items():
    assert row['notes'] == min(2, int(np.sum(notes['family'] == families.index(name))))
    assert sum(row['fit_named'].values()) == row['notes']
    assert row['fit_named_right'] == row['fit_named'].get(name, 0) / row['notes'] and row['loss'] > 0
  # The real notes' column is the classifier's own verdict on the drawn notes (the same draw as the evaluator's).
  rng = np.random.default_rng(0)
  index = np.concatenate([
      rng.choice(np.flatnonzero(notes['family'] == f), min(2, int(np.sum(notes['family'] == f))), replace=False)
      for f in range(len(families))
  ])
  classifier = stages.ensure_classifiers(config, trained_tiny_workdir)['family']
  named = fidelity.classify(config, 'family', classifier, notes['audio'][index])[0].argmax(axis=1)
  assert result['real_named_right'] == pytest.approx(np.mean(named == notes['family'][index]))

  # Bad overrides fail at once, before any fit, naming the field: outside model.harmonic, absent, of the wrong type,
  # out of range.
  for bad, message in (('audio.note_rms=0.1', 'only the synthesiser'), ('model.harmonic.nothing=1', 'no field'),
                       ('model.harmonic.noise_max=abc', 'noise_max'), ('model.harmonic.fundamental_floor=2.0',
                                                                       'fundamental_floor')):
    assert script.main(['--workdir', trained_tiny_workdir, f'--set={bad}']) == 2, bad
    assert message in capsys.readouterr().err, bad
  assert script.main(['--workdir', str(tmp_path / 'nothing')]) == 2
  assert 'Error:' in capsys.readouterr().err
