"""Config checks and loading: bad values name their field; an older config.json loads as its model was trained."""

import json
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax.configs import aux
from face2music_jax.configs import baseline
from face2music_jax import config_lib
from face2music_jax import translator as translator_lib
from face2music_jax import workdir as workdir_lib


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('model.generator', 'vocoder', 'model.generator'),
        ('model.wavegan.upsample', 'cubic', 'model.wavegan.upsample'),
        ('model.wavegan.post_filter', -1, 'model.wavegan.post_filter'),
        ('model.harmonic.frames', 100, 'model.harmonic.frames'),
        ('model.harmonic.num_harmonics', 0, 'model.harmonic.num_harmonics'),
        ('train.pitch_classification_weight', -1.0, 'train.pitch_classification_weight'),
        ('train.metric_warmup_steps', -5, 'train.metric_warmup_steps'),
        ('eval.listening_pitches', (12, 100), 'eval.listening_pitches'),
        ('seed', -1, 'seed'),
        ('eval.seed', 2**40, 'eval.seed'),
        ('train.g_lr', float('inf'), 'train.g_lr'),
        ('train.d_lr', float('nan'), 'train.d_lr'),
        ('train.metric_weight', float('inf'), 'train.metric_weight'),
        ('data.max_default_faces', 5, 'data.max_default_faces'),
        ('train.metric_pairs', 'same', 'train.metric_pairs'),
        ('model.aux_pack', 3, 'model.aux_pack'),  # The small batch (16) does not divide into packs of 3.
        ('model.aux_pack', 0, 'model.aux_pack'),
        ('train.face_spread', 0.5, 'train.face_spread'),
        ('train.face_spread', float('nan'), 'train.face_spread'),
        ('train.face_noise', -0.1, 'train.face_noise'),
        ('train.face_noise', float('inf'), 'train.face_noise'),
        ('train.face_noise_space', 'faces', 'train.face_noise_space'),
        ('train.aux_r1_weight', -1.0, 'train.aux_r1_weight'),
        ('train.family_marginal_weight', -0.5, 'train.family_marginal_weight'),
        ('train.family_marginal_weight', float('nan'), 'train.family_marginal_weight'),
        ('train.family_faces_spread', -1.0, 'train.family_faces_spread'),
        ('train.family_faces_judged', True, 'train.family_faces_judged'),  # Without family faces.
        ('train.family_faces_center', 'faces.npz', 'train.family_faces_center'),  # Without family faces.
        ('train.family_batch_weight', -0.1, 'train.family_batch_weight'),
        ('train.family_batch_weight', 0.25, 'train.family_batch_weight'),  # Without family faces.
        ('train.family_faces_shift', -0.5, 'train.family_faces_shift'),
        ('train.family_faces_shift', 0.5, 'train.family_faces_shift'),  # Without family faces.
        ('model.harmonic.face_norm', 'layer', 'model.harmonic.face_norm'),
        ('model.harmonic.envelope_bands', 1, 'model.harmonic.envelope_bands'),
        ('model.harmonic.envelope_bands', -3, 'model.harmonic.envelope_bands'),
        ('model.harmonic.max_partial_hz', -1.0, 'model.harmonic.max_partial_hz'),
        ('model.harmonic.max_partial_hz', 500.0, 'model.harmonic.max_partial_hz'),  # Below the top notes' f0.
        ('train.share_matching_weight', -1.0, 'train.share_matching_weight'),
        ('train.share_matching_band', -12, 'train.share_matching_band'),
        ('model.harmonic.fundamental_floor_high', 0.1, 'model.harmonic.fundamental_floor_high'),  # Below 0.2.
        ('model.harmonic.fundamental_floor_high', 1.0, 'model.harmonic.fundamental_floor_high'),
        ('model.harmonic.fundamental_floor_pitches', (72, 60), 'model.harmonic.fundamental_floor_pitches'),
        ('model.harmonic.fundamental_floor_pitches', (60, 66, 72), 'model.harmonic.fundamental_floor_pitches'),
        ('train.metric_shift', float('nan'), 'train.metric_shift'),
        ('train.metric_features', 'conv', 'train.metric_features'),
        ('model.harmonic.face_components', -1, 'model.harmonic.face_components'),
        ('model.harmonic.face_components', 129, 'model.harmonic.face_components'),
        ('audio.note_rms', -1.0, 'audio.note_rms'),
        ('audio.note_rms', 0.2, 'audio.note_rms'),
        ('audio_embedding.mfcc_scale', 'standard', 'audio_embedding.mfcc_scale'),
        ('train.aux_mfcc_scale', 'pooled', 'train.aux_mfcc_scale'),
        ('model.discriminator_harmonics', -1, 'model.discriminator_harmonics'),
    ])
def test_bad_values_of_the_new_fields_name_them(field, value, message):
  config = aux.get_config('small')
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=message.replace('.', r'\.')):
    config_lib.validate(config)


def test_family_faces_without_the_family_marginal_loss_are_refused():
  config = aux.get_config('small')
  assert config.train.family_marginal_weight > 0  # The `aux` config's, with the harmonic generator.
  config.train.family_faces_spread = 1.25
  config_lib.validate(config)
  config.train.family_marginal_weight = 0.0
  with pytest.raises(config_lib.ConfigError, match=r'train\.family_faces_spread.*needs train\.family_marginal_weight'):
    config_lib.validate(config)


def test_a_fixed_face_standardisation_without_the_standardisation_is_refused():
  config = aux.get_config('small')
  config.model.harmonic.face_norm = 'fixed'
  config_lib.validate(config)
  config.model.harmonic.normalize_face = False
  with pytest.raises(config_lib.ConfigError,
                     match=r"model\.harmonic\.face_norm.*needs model\.harmonic\.normalize_face"):
    config_lib.validate(config)


def test_options_that_would_be_computed_wrongly_together_are_refused():
  config = aux.get_config('small')
  config.model.generator, config.train.metric_pairs = 'wavegan', 'one_pitch'
  with pytest.raises(config_lib.ConfigError, match="'one_pitch' needs model.generator = 'harmonic'"):
    config_lib.validate(config)
  config = aux.get_config('small')
  config.train.loss, config.model.aux_pack = 'wgan-gp', 2
  with pytest.raises(config_lib.ConfigError, match='packs need train.loss'):
    config_lib.validate(config)
  config = aux.get_config('small')
  config.train.face_noise, config.train.face_noise_space = 0.5, 'projection'
  config.model.harmonic.fundamental_floor_high = 0.5  # A floor that rises with pitch, from the default's 0.2.
  config_lib.validate(config)  # The default's face space (model.harmonic.face_components = 40).
  config.model.harmonic.face_components = 0
  with pytest.raises(config_lib.ConfigError, match="'projection' needs model.generator = 'harmonic' with"):
    config_lib.validate(config)


def test_listening_pitches_keep_those_in_the_trained_range():
  config = aux.get_config('tiny')  # MIDI 48..60
  assert config_lib.listening_pitches(config) == (48, 60)
  assert config_lib.listening_pitches(aux.get_config('small')) == (36, 48, 60, 72)


def test_pitch_classes_and_midi_pitches_convert_one_way_and_back():
  config = aux.get_config()
  low, high = config.audio.pitch_min, config.audio.pitch_max
  assert config_lib.pitch_class(config, low) == 0 and config_lib.midi_pitch(config, 0) == low
  assert config_lib.pitch_class(config, high) == config_lib.num_pitches(config) - 1
  midi = np.arange(low, high + 1, dtype=np.int32)
  classes = config_lib.pitch_class(config, midi)
  assert classes.dtype == np.int32 and np.array_equal(classes, np.arange(config_lib.num_pitches(config)))
  back = config_lib.midi_pitch(config, classes)
  assert back.dtype == np.int32 and np.array_equal(back, midi)
  jax_back = config_lib.midi_pitch(config, jnp.asarray(classes))
  assert jax_back.dtype == jnp.int32 and np.array_equal(np.asarray(jax_back), midi)
  config.audio.pitch_min = 30
  assert config_lib.midi_pitch(config, config_lib.pitch_class(config, 64)) == 64
  assert config_lib.pitch_class(config, 64) == 34


def test_an_older_config_json_loads_with_the_values_its_model_was_trained_with(tmp_path):
  config = aux.get_config('small')
  written = json.loads(config.to_json())
  for field in config_lib.ADDED_FIELDS:
    *parents, leaf = field.split('.')
    node = written
    for part in parents:
      node = node[part]
    del node[leaf]
  (tmp_path / 'config.json').write_text(json.dumps(written))
  loaded = config_lib.load_config(str(tmp_path))
  assert loaded.model.generator == 'wavegan'  # What every model was before the harmonic generator existed.
  assert loaded.model.wavegan.upsample == 'transposed' and loaded.train.pitch_classification_weight == 0.0
  assert loaded.eval.listening_pitches == (36, 48, 60, 72)
  assert loaded.train.dtype == 'float32' and loaded.model.harmonic.noise_max == 2.0
  assert loaded.notes.exclude == ((66, 64),)  # JSON lists come back as the config's tuples.
  assert loaded.audio_embedding.mfcc_scale == 'coefficient'  # phi as it was before the pooled scale.
  assert loaded.train.aux_mfcc_scale == 'phi'  # A sees phi(y) itself, as before its input scale.
  assert loaded.train.metric_features == 'phi'  # Eq. 1 in phi, the paper's.
  config_lib.validate(loaded)
  # A current config.json keeps its own values.
  (tmp_path / 'config.json').write_text(config.to_json())
  assert config_lib.load_config(str(tmp_path)).model.generator == 'harmonic'


def test_a_config_json_of_the_fields_before_they_moved_loads_under_their_new_names(tmp_path):
  config = aux.get_config('paper')
  written = json.loads(config.to_json())
  wavegan = written['model'].pop('wavegan')
  written['model'].update(generator_dim=wavegan['dim'], upsample=wavegan['upsample'],
                          pitch_input=wavegan['pitch_input'], post_filter=wavegan['post_filter'])
  assert set(
      config_lib.RENAMED_FIELDS) == {f'model.{k}' for k in ('generator_dim', 'upsample', 'pitch_input', 'post_filter')}
  (tmp_path / 'config.json').write_text(json.dumps(written))
  loaded = config_lib.load_config(str(tmp_path))
  assert loaded.to_dict() == config_lib.tuples(json.loads(config.to_json()))
  assert (loaded.model.wavegan.upsample, loaded.model.wavegan.post_filter) == ('nearest', 512)
  assert 'upsample' not in loaded.model


def test_a_missing_or_corrupt_config_json_is_named(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='config.json'):
    config_lib.load_config(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"name": "aux", ')
  with pytest.raises(config_lib.ConfigError, match=os.path.join(str(tmp_path), 'config.json')):
    config_lib.load_config(str(tmp_path))


def test_the_face_network_is_checked_at_start(tmp_path):
  config = aux.get_config('tiny')
  config.data.face_embedding = 'network'
  config.data.embedding_dim = 512
  with pytest.raises(config_lib.ConfigError, match='config.data.face_weights'):
    config_lib.validate(config)  # No weights file named.
  config.data.face_weights = str(tmp_path / 'missing.npz')
  with pytest.raises(config_lib.ConfigError, match=r"config.data.face_weights = '.*missing.npz': no such file"):
    config_lib.validate(config)
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  config.data.face_weights = str(tmp_path / 'junk.npz')
  with pytest.raises(config_lib.ConfigError, match=r"config.data.face_weights = '.*junk.npz': not a readable"):
    config_lib.validate(config)
  # The width is read from the last layer alone (the whole file is checked when the network is loaded).
  np.savez(tmp_path / 'face.npz', **{'params/last_linear/kernel': np.zeros((224, 512), np.float32)})
  config.data.face_weights = str(tmp_path / 'face.npz')
  assert config_lib.face_network_dim(config.data.face_weights) == 512
  config_lib.validate(config)  # The default faces (face_source 'lfw_subset') may be embedded by the network too.
  config.data.embedding_dim = 128
  with pytest.raises(
      config_lib.ConfigError, match=r'config.data.embedding_dim = 128 is invalid: the face network '
      r".*face.npz' gives 512-d embeddings"):
    config_lib.validate(config)
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  config.data.face_weights = str(tmp_path / 'other.npz')
  with pytest.raises(config_lib.ConfigError, match='params/last_linear/kernel'):
    config_lib.validate(config)


def test_one_helper_reads_and_sets_a_dotted_field():
  config = aux.get_config('tiny')
  assert config_lib.get_field(config, 'train.g_lr') == config.train.g_lr
  config_lib.set_field(config, 'model.harmonic.hidden', 7)
  assert config.model.harmonic.hidden == 7
  for field in ('train.g_lrr', 'trian.g_lr', 'train.g_lr.x'):
    with pytest.raises(config_lib.ConfigError, match=f'The config has no field {re.escape(field)}'):
      config_lib.set_field(config, field, 1)
  loaded = {'train': {}}
  config_lib.set_field(loaded, 'model.harmonic.release', 0.5, create=True)  # A field an older config.json lacks.
  assert loaded == {'train': {}, 'model': {'harmonic': {'release': 0.5}}}


def test_the_cache_is_where_face2music_cache_says_and_an_empty_one_means_the_default(monkeypatch, tmp_path):
  default = os.path.join(os.path.expanduser('~'), '.cache', 'face2music_jax')
  monkeypatch.setenv('FACE2MUSIC_CACHE', str(tmp_path))
  assert config_lib.cache_root() == str(tmp_path) and aux.get_config('tiny').data_dir == str(tmp_path / 'data')
  # `FACE2MUSIC_CACHE=$DIR face2music train` with DIR unset: once wrote the data into the current directory.
  monkeypatch.setenv('FACE2MUSIC_CACHE', '')
  assert config_lib.cache_root() == default and aux.get_config('tiny').data_dir == os.path.join(default, 'data')
  monkeypatch.delenv('FACE2MUSIC_CACHE')
  assert config_lib.cache_root() == default


def test_the_shipped_model_was_trained_with_todays_default_config():
  """A change of a default field that defines a run ships with a model retrained with it (then `face2music export
  --shipped`), or this fails; paths, step counts and evaluation settings may differ (`workdir.run_fields`)."""
  shipped = workdir_lib.run_fields(translator_lib.Translator.load().config)
  default = workdir_lib.run_fields(aux.get_config('small'))
  differ = {k: (shipped.get(k), default.get(k)) for k in set(shipped) | set(default) if shipped.get(k) != default.get(k)}
  assert not differ, f'(shipped, default): {differ}'


def test_a_scale_for_the_auxiliary_discriminator_of_a_config_without_one_is_refused():
  config = baseline.get_config('small')
  config.train.aux_mfcc_scale = 'coefficient'
  with pytest.raises(config_lib.ConfigError, match=r'train\.aux_mfcc_scale.*does not use'):
    config_lib.validate(config)
  config.train.aux_mfcc_scale = 'phi'
  config_lib.validate(config)
