"""Input pipeline for NSynth-format notes: the rendered SoundFont notes or the real TFDS nsynth, through one path.

`config.data.audio_source` selects the TFDS dataset: 'soundfont_notes' (`face2music_jax.data.notes`, rendered by
`stages.ensure_data`) or 'nsynth' (`config.data.nsynth_name`, read from `config_lib.tfds_data_dir(config)`, never
downloaded). Both have TFDS nsynth's features, and every example becomes

  audio:      [length] float32, 16 kHz, `config.audio.length` samples from the note onset (zero-padded), faded
              out over the last `config.audio.release_s` (synthesis.release_window, as the generated notes) and,
              with `config.audio.note_rms`, scaled to that RMS (synthesis.normalize_rms, as the generated notes);
  pitch:      int32 class index, MIDI pitch - config.audio.pitch_min (`config_lib.pitch_class`; notes outside
              pitch_min..pitch_max are dropped);
  family:     int32 index into `config_lib.family_names(config)`;
  velocity:   int32 MIDI velocity;
  instrument: int32 NSynth instrument label.

Read a whole split with `load_notes`: it names the file of a corrupt or malformed record (e.g. a note shorter than
NSynth's 4 s) and the record's index in it, instead of surfacing TensorFlow's bare error. A dataset sampled at
another rate than config.audio.sample_rate fails when it is opened. Training holds the cropped notes in memory
(`data/inputs.py`; `length` samples each, 8x less than NSynth's 4 s notes, split over hosts by example), so there
is no streaming reader of notes.
"""

import os
import re
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from face2music_jax import config_lib
from face2music_jax.audio import synthesis
from face2music_jax.data import notes

# The onset is the first sample whose magnitude exceeds 1 % of the note's peak (-40 dB): below that, what precedes
# a note is silence or noise, and cutting there aligns all notes to their attack.
ONSET_FRACTION = 0.01
# The features the pipeline decodes; the others (id, qualities, and nsynth's f0/loudness variants) stay unparsed.
_USED_FEATURES = {'audio': True, 'pitch': True, 'velocity': True, 'instrument': {'family': True, 'label': True}}


class DataError(ValueError):
  """Prepared data is missing, malformed or corrupt; the message names the file or feature."""


def _check_features(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict) -> None:
  """Fails with DataError naming a feature that differs from TFDS nsynth's or, for the sample rate, from the config."""
  expected = notes.nsynth_features()
  features = builder.info.features
  for path in ('audio', 'pitch', 'velocity', 'instrument/family', 'instrument/label'):
    want, got = expected, features
    for key in path.split('/'):
      want = want[key]
      if key not in got:
        raise DataError(f'{builder.data_dir} has no feature {path!r}; expected TFDS nsynth features.')
      got = got[key]
    if (got.shape, got.np_dtype) != (want.shape, want.np_dtype):
      raise DataError(f'Feature {path!r} of {builder.data_dir} has shape {got.shape} and dtype {got.np_dtype}; '
                      f'expected shape {want.shape} and dtype {want.np_dtype}, as TFDS nsynth.')
  if tuple(features['instrument']['family'].names) != config_lib.NSYNTH_FAMILIES:
    raise DataError(f"Feature 'instrument/family' of {builder.data_dir} has classes "
                    f"{features['instrument']['family'].names}; expected {config_lib.NSYNTH_FAMILIES}.")
  rate = features['audio'].sample_rate
  if rate is not None and rate != config.audio.sample_rate:
    raise DataError(f"Feature 'audio' of {builder.data_dir} is sampled at {rate} Hz but config.audio.sample_rate = "
                    f'{config.audio.sample_rate}: set config.audio.sample_rate = {rate}, or resample the dataset.')


def audio_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder of `config.data.audio_source`; builds nothing (`stages.ensure_data` renders the
  SoundFont notes).

  Raises:
    DataError: the SoundFont notes are not rendered, or real nsynth is not prepared in the data dir, or its
      features differ from TFDS nsynth's.
  """
  if config.data.audio_source == 'soundfont_notes':
    builder = notes.notes_builder(config)
    if not builder.is_prepared():
      raise DataError(f'The SoundFont notes are not rendered: no prepared dataset in {builder.data_dir}. '
                      'stages.ensure_data (run by run_train.py and run_eval.py) renders them.')
  else:
    data_dir = config_lib.tfds_data_dir(config)
    builder = notes.readable_builder(lambda: tfds.builder(config.data.nsynth_name, data_dir=data_dir),
                                     os.path.join(data_dir, config.data.nsynth_name),
                                     'copy the prepared dataset there again')
    if not builder.is_prepared():
      raise DataError(
          f'TFDS {config.data.nsynth_name!r} is not prepared in {data_dir} (config.data.tfds_data_dir), and it '
          'is never downloaded here. Prepare it on a machine that can download it (`tfds build '
          f'{config.data.nsynth_name} --data_dir=<dir>` needs Apache Beam) and copy <dir>/nsynth into {data_dir}, '
          "or set config.data.audio_source = 'soundfont_notes'.")
  _check_features(builder, config)
  return builder


def _check_split(builder: tfds.core.DatasetBuilder, split: str) -> None:
  if split not in builder.info.splits:
    raise DataError(f'{builder.data_dir} has no split {split!r}; it has {sorted(builder.info.splits)}.')


def _examples(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, split: str) -> tf.data.Dataset:
  """Unbatched examples of `split` in file order, in the pitch range, cropped from the onset."""
  a = config.audio
  families = config_lib.family_names(config)
  family_index = tf.constant([families.index(f) if f in families else -1 for f in config_lib.NSYNTH_FAMILIES], tf.int32)
  # No TFDS auto-cache: it would hold whole 4 s notes in memory where the pipeline keeps `length` samples.
  read_config = tfds.ReadConfig(try_autocache=False)
  ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config,
                          decoders=tfds.decode.PartialDecoding(_USED_FEATURES))
  ds = ds.filter(lambda ex: (ex['pitch'] >= a.pitch_min) & (ex['pitch'] <= a.pitch_max))

  # The same release as the generator's: real and generated notes end alike.
  release = tf.constant(synthesis.release_window(a.length, a.sample_rate, a.release_s))

  def prepare(ex):
    audio = ex['audio']
    above = tf.abs(audio) > ONSET_FRACTION * tf.reduce_max(tf.abs(audio))
    # Samples before the first one above the threshold (all of them for a silent note, which stays silent).
    onset = tf.reduce_sum(tf.cast(tf.equal(tf.cumsum(tf.cast(above, tf.int32)), 0), tf.int32))
    clip = audio[onset:onset + a.length]
    clip = tf.pad(clip, [[0, a.length - tf.shape(clip)[0]]]) * release
    if a.note_rms:  # synthesis.normalize_rms, as the generated notes.
      clip = clip * (a.note_rms / tf.sqrt(tf.reduce_mean(tf.square(clip)) + synthesis.RMS_FLOOR**2))
    return {
        'audio': tf.ensure_shape(clip, [a.length]),
        'pitch': config_lib.pitch_class(config, tf.cast(ex['pitch'], tf.int32)),
        'family': tf.gather(family_index, ex['instrument']['family']),
        'velocity': tf.cast(ex['velocity'], tf.int32),
        'instrument': tf.cast(ex['instrument']['label'], tf.int32),
    }

  return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


def _tf_message(error: tf.errors.OpError) -> str:
  """The first line of a TensorFlow error without its graph-node annotations and tf.data's iterator prefix."""
  message = re.sub(r'\{\{[^}]*\}\}\s*', '', error.message).split('\n')[0].strip()
  return re.sub(r'^Error in user-defined function passed to \S+ transformation with iterator: \S+: ', '', message)


def _locate_bad_record(builder: tfds.core.DatasetBuilder, split: str, error: tf.errors.OpError) -> DataError:
  """Reads each file of the split alone to name the one TensorFlow failed on, and the record's index in it."""
  paths = [str(p) for p in builder.info.splits[split].filepaths]
  for path in paths:
    index = 0
    try:
      for _ in tf.data.TFRecordDataset(path).map(builder.info.features.deserialize_example):
        index += 1
    except tf.errors.OpError as e:
      return DataError(f'Corrupt or malformed record in {path} (record {index}, counting from 0): {_tf_message(e)}')
  return DataError(f'Reading split {split!r} of {builder.data_dir} (files {paths}) failed: {_tf_message(error)}')


def _numpy_batches(ds: tf.data.Dataset, builder: tfds.core.DatasetBuilder,
                   split: str) -> Iterator[dict[str, np.ndarray]]:
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      raise _locate_bad_record(builder, split, e) from e
    yield batch


def load_notes(config: ml_collections.ConfigDict, split: str, max_examples: int | None = None) -> dict[str, np.ndarray]:
  """All examples of a split in the pitch range (the whole split, not one process's share), in file order.

  TFDS shuffles examples when it writes them, so the first `max_examples` are a random sample of the split.

  Returns:
    audio [N, length] float32; pitch, family, velocity, instrument [N] int32.
  """
  builder = audio_builder(config)
  _check_split(builder, split)
  ds = _examples(config, builder, split)
  if max_examples is not None:
    ds = ds.take(max_examples)
  batches = list(_numpy_batches(ds.batch(256), builder, split))
  total = builder.info.splits[split].num_examples
  if not batches:
    raise DataError(f'Split {split!r} of {builder.data_dir} has no notes with MIDI pitches '
                    f'{config.audio.pitch_min}..{config.audio.pitch_max} (config.audio.pitch_min/pitch_max).')
  loaded = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
  count = len(loaded['pitch'])
  if max_examples is None:
    logging.info('Loaded %d notes of split %r of %s; %d of its %d fall outside MIDI pitches %d..%d.', count, split,
                 builder.data_dir, total - count, total, config.audio.pitch_min, config.audio.pitch_max)
  else:
    logging.info('Loaded %d notes (max_examples=%d) of split %r of %s.', count, max_examples, split, builder.data_dir)
  return loaded
