"""The notes input pipeline on the SoundFont notes and on real-format TFDS nsynth data, through the same code."""

import glob
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from face2music_jax.configs import aux
from face2music_jax import config_lib
from face2music_jax.audio import synthesis
from face2music_jax.data import note_batches, notes

NSYNTH = 'nsynth/gansynth_subset'
_ONSET = 0.5  # Amplitude of the first sample of each synthetic note.


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """The tiny config (audio pitches 48..60) with its SoundFont notes prepared once."""
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path_factory.mktemp('data'))
  notes.prepare_notes(config)
  return config


def _synthetic_note(pitch: int, onset: int, num_samples: int = notes.NUM_SAMPLES) -> np.ndarray:
  """Silence, then from `onset` a cosine at the pitch's frequency that starts at its peak."""
  t = np.arange(num_samples - onset) / notes.SAMPLE_RATE
  x = np.zeros(num_samples, np.float32)
  x[onset:] = _ONSET * np.cos(2 * np.pi * 440.0 * 2**((pitch - 69) / 12) * t)
  return x


def _write_prepared(version_dir: str, name: str, features, records: dict[str, list[bytes]]) -> list[str]:
  """Writes a prepared TFDS dataset `name`: one TFRecord shard of serialized examples per split, plus metadata."""
  os.makedirs(version_dir)
  paths = []
  for split, split_records in records.items():
    paths.append(os.path.join(version_dir, f'{name}-{split}.tfrecord-00000-of-00001'))
    with tf.io.TFRecordWriter(paths[-1]) as writer:
      for record in split_records:
        writer.write(record)
  tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features, check_data=False)
  return paths


def _nsynth_dir(config) -> str:
  return os.path.join(config.data_dir, 'tfds', NSYNTH, str(tfds.builder(NSYNTH).version))


def _nsynth_example(i: int, pitch: int, onset: int, num_samples: int = notes.NUM_SAMPLES) -> dict:
  return {
      'id': f'note{i}',
      'audio': _synthetic_note(pitch, onset, num_samples),
      'pitch': pitch,
      'velocity': i,  # Unique, to match outputs with inputs.
      'instrument': {
          'label': 1000 + i % 6,
          'family': i % 11,
          'source': 0
      },
      'qualities': dict.fromkeys(notes.QUALITIES, False)
  }


# (pitch, onset): pitches outside 48..60 must be dropped; the last in-range note is shorter than 8192 samples
# after its onset and must be zero-padded.
_NSYNTH_NOTES = [(48, 0), (30, 100), (55, 1000), (60, 2500), (100, 0), (52, 7), (57, 60000)]


@pytest.fixture(scope='module')
def nsynth_config(tmp_path_factory):
  """The tiny config reading real-format TFDS nsynth (the true nsynth feature spec) from a temporary data dir."""
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path_factory.mktemp('nsynth'))
  config.data.audio_source = 'nsynth'
  features = tfds.builder(NSYNTH).info.features
  examples = {
      'train': [_nsynth_example(i, p, o) for i, (p, o) in enumerate(_NSYNTH_NOTES)],
      'valid': [_nsynth_example(20 + i, 50 + i, 0) for i in range(3)]
  }
  _write_prepared(_nsynth_dir(config), 'nsynth', features, {
      split: [features.serialize_example(ex) for ex in exs] for split, exs in examples.items()
  })
  return config


def test_notes_have_configured_shapes_dtypes_and_pitch_range(tiny):
  loaded = note_batches.load_notes(tiny, 'train')
  n = len(loaded['pitch'])
  assert n and loaded['audio'].shape == (n, tiny.audio.length) and loaded['audio'].dtype == np.float32
  for key in ('pitch', 'family', 'velocity', 'instrument'):
    assert loaded[key].shape == (n,) and loaded[key].dtype == np.int32, key
  assert loaded['pitch'].min() >= 0 and loaded['pitch'].max() <= tiny.audio.pitch_max - tiny.audio.pitch_min
  assert set(loaded['family']) <= set(range(config_lib.num_families(tiny)))
  assert np.all(loaded['velocity'] == 100)
  # Cropped at the onset: the first samples already sound.
  assert np.all(np.max(np.abs(loaded['audio'][:, :200]), axis=1) > 1e-3)
  assert config_lib.family_names(tiny) == ('bass', 'flute', 'keyboard', 'string')
  first = note_batches.load_notes(tiny, 'train', max_examples=3)
  np.testing.assert_array_equal(first['audio'], loaded['audio'][:3])


def test_unrendered_soundfont_notes_are_named_and_not_rendered_by_the_reader(tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  with pytest.raises(note_batches.DataError, match=r'SoundFont notes are not rendered: .*soundfont_notes.*ensure_data'):
    note_batches.load_notes(config, 'train')
  assert not notes.notes_builder(config).is_prepared()


def test_real_nsynth_format_goes_through_the_same_code(nsynth_config):
  loaded = note_batches.load_notes(nsynth_config, 'train')
  kept = [(i, p, o) for i, (p, o) in enumerate(_NSYNTH_NOTES) if 48 <= p <= 60]
  assert loaded['velocity'].tolist() == [i for i, _, _ in kept]  # File order; out-of-range pitches dropped.
  assert loaded['pitch'].tolist() == [p - 48 for _, p, _ in kept]
  assert loaded['family'].tolist() == [i % 11 for i, _, _ in kept]  # All 11 NSynth families, unchanged.
  assert loaded['instrument'].tolist() == [1000 + i % 6 for i, _, _ in kept]
  length = nsynth_config.audio.length
  # Each note from its onset, faded out over its last release_s like the generated notes.
  release = synthesis.release_window(length, nsynth_config.audio.sample_rate, nsynth_config.audio.release_s)
  assert release[0] == 1 and release[-1] == 0
  for row, (_, pitch, onset) in zip(loaded['audio'], kept):
    expected = _synthetic_note(pitch, onset)[onset:onset + length]
    np.testing.assert_allclose(row[:len(expected)], expected * release[:len(expected)], rtol=1e-6, atol=1e-7)
    assert not np.any(row[len(expected):])  # Zero-padded when the note ends within `length` samples.
  assert config_lib.num_families(nsynth_config) == 11
  valid = note_batches.load_notes(nsynth_config, 'valid')
  assert valid['audio'].shape == (3, length) and valid['pitch'].dtype == np.int32


def test_note_rms_scales_every_real_note_as_the_generated_ones_are(nsynth_config):
  """With audio.note_rms the pipeline (TensorFlow) scales each note as synthesis.normalize_rms (JAX) does."""
  plain = note_batches.load_notes(nsynth_config, 'train')
  config = nsynth_config.copy_and_resolve_references()
  config.audio.note_rms = 0.07
  scaled = note_batches.load_notes(config, 'train')
  rms = np.sqrt(np.mean(np.square(scaled['audio']), axis=-1))
  np.testing.assert_allclose(rms, 0.07, rtol=1e-4)
  np.testing.assert_allclose(scaled['audio'], np.asarray(synthesis.normalize_rms(plain['audio'], 0.07)), rtol=1e-5,
                             atol=1e-7)
  assert np.array_equal(scaled['pitch'], plain['pitch'])


def test_unprepared_nsynth_says_how_to_prepare_it(tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.audio_source = 'nsynth'
  with pytest.raises(note_batches.DataError, match=r'not prepared in .*tfds_data_dir.*tfds build'):
    note_batches.load_notes(config, 'train')


def test_unknown_split_is_named(nsynth_config):
  with pytest.raises(note_batches.DataError, match="no split 'test'"):
    note_batches.load_notes(nsynth_config, 'test')


def test_wrong_audio_shape_in_dataset_info_is_named(tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.audio_source = 'nsynth'
  config.data.nsynth_name = 'short_notes'
  features = tfds.builder(NSYNTH).info.features
  short = tfds.features.FeaturesDict({
      **features, 'audio': tfds.features.Audio(shape=(16000,), dtype=np.float32, sample_rate=notes.SAMPLE_RATE)
  })
  _write_prepared(os.path.join(config.data_dir, 'tfds', 'short_notes', '1.0.0'), 'short_notes', short,
                  {'train': [short.serialize_example(_nsynth_example(0, 50, 0, num_samples=16000))]})
  with pytest.raises(note_batches.DataError, match=r"'audio' .* shape \(16000,\).*expected shape \(64000,\)"):
    note_batches.load_notes(config, 'train')


def test_records_of_wrong_shape_name_their_file(tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.audio_source = 'nsynth'
  features = tfds.builder(NSYNTH).info.features
  example = tf.train.Example.FromString(features.serialize_example(_nsynth_example(0, 50, 0)))
  del example.features.feature['audio'].float_list.value[16000:]  # A 1 s note where NSynth has 4 s.
  (path,) = _write_prepared(_nsynth_dir(config), 'nsynth', features, {'train': [example.SerializeToString()]})
  with pytest.raises(note_batches.DataError, match=f'{re.escape(path)}.*audio'):
    note_batches.load_notes(config, 'train')


def test_corrupt_tfrecord_names_its_file(tiny, tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  shutil.copytree(os.path.join(tiny.data_dir, 'tfds'), os.path.join(config.data_dir, 'tfds'))
  (path,) = glob.glob(os.path.join(config.data_dir, 'tfds', 'soundfont_notes', '*', '*', '*-train.tfrecord*'))
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(np.random.default_rng(0).bytes(1000))
  with pytest.raises(note_batches.DataError, match=f'Corrupt or malformed record in {re.escape(path)}'):
    note_batches.load_notes(config, 'train')


def test_a_sample_rate_other_than_the_configs_is_named(tmp_path, tiny):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.audio_source = 'nsynth'
  config.data.nsynth_name = 'notes_22k'
  features = tfds.builder(NSYNTH).info.features
  resampled = tfds.features.FeaturesDict({
      **features, 'audio': tfds.features.Audio(shape=(notes.NUM_SAMPLES,), dtype=np.float32, sample_rate=22050)
  })
  _write_prepared(os.path.join(config.data_dir, 'tfds', 'notes_22k', '1.0.0'), 'notes_22k', resampled,
                  {'train': [resampled.serialize_example(_nsynth_example(0, 50, 0))]})
  with pytest.raises(note_batches.DataError, match=r"'audio' of .*notes_22k.* sampled at 22050 Hz but "
                     r'config\.audio\.sample_rate = 16000'):
    note_batches.load_notes(config, 'train')
  # The SoundFont notes are rendered at 16 kHz: a config asking for another rate is refused the same way.
  other = aux.get_config('tiny')
  other.data_dir = tiny.data_dir
  other.audio.sample_rate = 22050
  with pytest.raises(note_batches.DataError, match=r'sampled at 16000 Hz but config\.audio\.sample_rate = 22050'):
    note_batches.load_notes(other, 'valid')


def test_a_note_shorter_than_the_onset_crop_names_its_file_and_record(tmp_path):
  config = aux.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.audio_source = 'nsynth'
  features = tfds.builder(NSYNTH).info.features
  good = [features.serialize_example(_nsynth_example(i, 50, 0)) for i in range(2)]
  short = tf.train.Example.FromString(good[1])
  del short.features.feature['audio'].float_list.value[config.audio.length // 2:]  # Half of the onset crop.
  (path,) = _write_prepared(_nsynth_dir(config), 'nsynth', features,
                            {'train': [good[0], short.SerializeToString(), good[1]]})
  with pytest.raises(note_batches.DataError, match=f'{re.escape(path)} \\(record 1, counting from 0\\).*audio'):
    note_batches.load_notes(config, 'train')
