"""The reader of face records (format in `faces/records.py`) for the models: the face files of a config, this
host's share of them, and whole sets of records as numpy arrays, with or without decoded images.

Training, its stages and evaluation hold the faces they use in memory (`data/inputs.py`): training reads only
the precomputed embeddings, which `load_faces` parses without decoding a JPEG (VGGFace2's 3.3M faces at 512-d
are 6.6 GB, split over hosts by file: `host_files`); only evaluation's figures and page decode images. There is
no streaming (tf.data) reader of faces for training; the face network's refinement reads records one file at a
time (`face_records.read_records`).

Every read is checked: a corrupt or truncated file, a shard with fewer records than its writer recorded, and a
record whose embedding has another width raise FaceDataError naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from face2music_jax.data import default_faces
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import records as face_records
from face2music_jax.faces.records import (EMBEDDER_KEY, EMBEDDING_DIM_KEY, EMBEDDING_KEY, FILENAME_KEY, IMAGE_KEY,
                                          LABEL_KEY, NAME_KEY, FaceDataError)

_EMBED_COMMAND = 'python -m face2music_jax.faces.records embed'


def face_files(config: ml_collections.ConfigDict, split: str) -> list[str]:
  """The face TFRecords of a split: config.data.face_tfrecords with '{split}' filled in, or the embedded default
  faces, which this only reads (`stages.ensure_data` builds them).

  Raises:
    FaceDataError: the files are missing (the default faces: not built), or their embeddings are of another
      embedder than the config's (`check_embedder`; the default faces are built per embedder:
      `default_faces.default_faces_dir`).
    config_lib.ConfigError: naming config.data.face_weights, if it is missing.
  """
  if config.data.face_source == 'tfrecords':
    pattern = config.data.face_tfrecords
    if '{split}' not in pattern:
      raise FaceDataError(f"config.data.face_tfrecords = {pattern!r} needs a '{{split}}' placeholder, e.g. "
                          "'/data/vggface2/{split}-*.tfrecord'.")
    files = face_records.resolve_files(pattern.replace('{split}', split))
    check_embedder(
        files, face_embedding.embedder_tag(config),
        f'embed them again with `{_EMBED_COMMAND} --embed=... [--face_weights=...]` as config.data.face_embedding '
        'and face_weights say, or set those to the embedder of the records.')
    return files
  files = default_faces.built_face_files(config)
  if split not in files:
    raise FaceDataError(f'The default faces have splits {sorted(files)}, not {split!r}.')
  return files[split]


def host_files(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """This host's share of the files: every `process_count`-th one, starting at `process_index`.

  The one host split of the face files (training's `inputs.TrainingData` uses it). Hosts never share a file: with
  fewer files than hosts, this raises rather than give some hosts the same faces as others (convert with at least
  as many shards as hosts; the default faces have 16 training shards).

  Raises:
    FaceDataError: fewer files than hosts.
  """
  if len(files) < process_count:
    raise FaceDataError(f'{len(files)} face TFRecord files (e.g. {files[0]}) cannot be split over {process_count} '
                        f'hosts, each reading its own files: convert with at least {process_count} shards.')
  return list(files[process_index::process_count])


def _first_record(files: Sequence[str]) -> tuple[str, tf.train.Example] | None:
  """(file, record) of the first record of `files`; None if all are empty."""
  for path in files:
    for example in face_records.read_records(path):
      return path, example
  return None


def stored_embedding_dim(files: Sequence[str]) -> int:
  """Width D of the embeddings in the first record of `files`; 0 if the records hold none (or all files are empty)."""
  first = _first_record(files)
  dim = first[1].features.feature[EMBEDDING_DIM_KEY].int64_list.value if first else []
  return int(dim[0]) if dim else 0


def stored_embedder(files: Sequence[str]) -> str | None:
  """The embedder tag of the first record of `files` ('dlib', 'network:<fingerprint>'); None if it has none."""
  first = _first_record(files)
  tag = first[1].features.feature[EMBEDDER_KEY].bytes_list.value if first else []
  return tag[0].decode() if tag else None


def check_embedder(files: Sequence[str], expected: str, fix: str) -> None:
  """Checks that face records hold embeddings of the expected embedder (by the first record's tag).

  Records without embeddings pass (the reader's width check reports them); records without a tag (written by an
  earlier version, or by an embedder without one) pass with a warning.

  Args:
    files: face TFRecords.
    expected: the embedder's tag (`face_embedding.embedder_tag`).
    fix: what to do about a mismatch, for the message.

  Raises:
    FaceDataError: naming the first file, its embedder and the expected one.
  """
  first = _first_record(files)
  if first is None or not first[1].features.feature[EMBEDDING_DIM_KEY].int64_list.value:
    return
  path, example = first
  tag = example.features.feature[EMBEDDER_KEY].bytes_list.value
  if not tag:
    logging.warning(
        'Face TFRecord file %s does not name the embedder of its embeddings (written by an earlier '
        'version?): they are taken to be of %s.', path, expected)
  elif tag[0].decode() != expected:
    raise FaceDataError(f'Face TFRecord file {path} holds embeddings of the face embedder {tag[0].decode()!r}, but the '
                        f'config embeds faces with {expected!r}: {fix}')


def _checked_records(path: tf.Tensor, size: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
  """The records of one file as (record, path); fails, naming the file, if it is corrupt or truncated, or holds
  another number of records than `expected` (-1: not recorded).

  TFRecordDataset's DataLossError does not name the file. So the file is read with errors ignored (reading stops
  at the first bad record) and, after its last record, the bytes read are compared with the file's size, and the
  records read with the number its writer recorded: a file cut at a record boundary is complete in bytes.
  """
  records = tf.data.TFRecordDataset(path).ignore_errors().map(lambda record: (record, False))
  marked = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b''), True)))

  def count(totals, element):
    bytes_read, records_read = totals
    record, is_end = element
    length = tf.cast(tf.strings.length(record), tf.int64) + face_records.RECORD_FRAMING_BYTES
    bytes_read += tf.where(is_end, tf.constant(0, tf.int64), length)
    records_read += tf.where(is_end, tf.constant(0, tf.int64), tf.constant(1, tf.int64))
    return (bytes_read, records_read), (record, is_end, bytes_read, records_read)

  def check_complete(record, is_end, bytes_read, records_read):
    corrupt = tf.strings.join([
        'Face TFRecord file ', path, ' is corrupt or truncated: its readable records end at '
        'byte ',
        tf.strings.as_string(bytes_read), ' of ',
        tf.strings.as_string(size), '.'
    ])
    missing = tf.strings.join([
        'Face TFRecord file ', path, ' holds ',
        tf.strings.as_string(records_read), ' records, but its writer recorded ',
        tf.strings.as_string(expected), ' (records are missing: truncated?)'
    ])
    complete = tf.debugging.Assert(tf.logical_or(~is_end, bytes_read == size), [corrupt])
    counted = tf.debugging.Assert(tf.logical_or(~is_end, (expected < 0) | (records_read == expected)), [missing])
    with tf.control_dependencies([complete, counted]):
      return tf.identity(record), is_end

  zero = tf.constant(0, tf.int64)
  checked = marked.scan((zero, zero), count).map(check_complete)
  return checked.filter(lambda record, is_end: ~is_end).map(lambda record, is_end: (record, path))


def _parse(record: tf.Tensor, path: tf.Tensor, image_size: int | None, embedding_dim: int) -> dict[str, tf.Tensor]:
  """The features of one record; the JPEG is parsed and decoded only for an `image_size`."""
  spec = {
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
      NAME_KEY: tf.io.FixedLenFeature([], tf.string),
      FILENAME_KEY: tf.io.FixedLenFeature([], tf.string)
  }
  if image_size is not None:
    spec[IMAGE_KEY] = tf.io.FixedLenFeature([], tf.string)
  if embedding_dim:
    spec[EMBEDDING_KEY] = tf.io.VarLenFeature(tf.float32)
  features = tf.io.parse_single_example(record, spec)
  out = {
      'identity': tf.cast(features[LABEL_KEY], tf.int32),
      'name': features[NAME_KEY],
      'filename': features[FILENAME_KEY]
  }
  if image_size is not None:
    image = tf.io.decode_jpeg(features[IMAGE_KEY], channels=3)  # Greyscale JPEGs become 3 equal channels.
    # VGGFace2's loose crops are centred on the face: keep the central square, then resize.
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    image = tf.image.resize(image, [image_size, image_size], antialias=True) / 255.0
    out['image'] = tf.ensure_shape(image, [image_size, image_size, 3])
  if embedding_dim:
    embedding = tf.sparse.to_dense(features[EMBEDDING_KEY])
    message = tf.strings.join([
        'Face TFRecord file ', path, ': the record of ', features[FILENAME_KEY], ' has an embedding of width ',
        tf.strings.as_string(tf.size(embedding)), f', not {embedding_dim}.'
    ])
    with tf.control_dependencies([tf.debugging.Assert(tf.size(embedding) == embedding_dim, [message])]):
      out['embedding'] = tf.reshape(embedding, [embedding_dim])
  return out


def load_faces(files: str | Sequence[str], image_size: int | None, embedding_dim: int | None = None,
               max_examples: int | None = None) -> dict[str, np.ndarray]:
  """All records of a set of face TFRecords, in file order, as numpy arrays.

  Args:
    files: a glob or a list of face TFRecords (all of them are read: pass `host_files` for a host's share).
    image_size: S, the side of the square images (faces are centre-cropped to a square first); None: no image is
      parsed or decoded.
    embedding_dim: the embedding width the caller expects: FaceDataError if the first record holds none or
      another width, or if a later one does (naming its file). None: the embeddings the records hold (those of the
      first record's width), if any.
    max_examples: read only the first ones (the files after them are not checked).

  Returns:
    'identity' int32 [N], 'name' and 'filename' str [N], with an `image_size` 'image' float32 [N, S, S, 3] in
    [0, 1] and, when the records hold embeddings, 'embedding' float32 [N, D].

  Raises:
    FaceDataError: naming the file or pattern, if the files are missing, empty, corrupt or truncated, or hold
      fewer records than their writer recorded, or embeddings of another width.
  """
  files = face_records.resolve_files(files)
  stored_dim = stored_embedding_dim(files)
  if embedding_dim is not None and stored_dim != embedding_dim:
    found = f'embeddings of width {stored_dim}' if stored_dim else 'no embeddings'
    raise FaceDataError(f'Face TFRecords {files[0]} (and others) hold {found}; expected width {embedding_dim}. '
                        f'Precompute them with `{_EMBED_COMMAND}`.')
  sizes = [tf.io.gfile.stat(f).length for f in files]
  expected = [-1 if (n := face_records.expected_records(f)) is None else n for f in files]
  ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64), tf.constant(expected, tf.int64)))
  ds = ds.flat_map(_checked_records)  # One file after the other: the file order.
  if max_examples is not None:
    ds = ds.take(max_examples)
  ds = ds.map(lambda record, path: _parse(record, path, image_size, stored_dim), num_parallel_calls=tf.data.AUTOTUNE)
  try:
    batches = list(ds.batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
  except tf.errors.InvalidArgumentError as e:
    # Keep the message of the reader's own checks, without the tf.data graph around it.
    checked = re.search(r'assertion failed: \[(.*?)\]', e.message)
    raise FaceDataError(checked.group(1) if checked else e.message) from e
  if not batches:
    raise FaceDataError(f'The face TFRecords {files} hold no examples.')
  out = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
  out['name'] = out['name'].astype(str)
  out['filename'] = out['filename'].astype(str)
  return out
