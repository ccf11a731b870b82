"""Faces as sharded TFRecords: the format, a converter from the VGGFace2 folder layout, a tf.data reader that splits
files over hosts, and the embedded default faces (real LFW crops from scikit-image).

Each record is a `tf.train.Example` with these features:

  image/encoded    bytes    the face image, JPEG (VGGFace2's loose crops; any size, RGB or greyscale)
  image/filename   bytes    path inside the source folder, '<identity>/<image>.jpg'
  identity/label   int64    index of the identity among the split's identity names, sorted
  identity/name    bytes    the identity's name, e.g. VGGFace2's 'n000002'
  embedding        float[D] optional: the precomputed face embedding f(x)
  embedding/dim    int64    optional: D, the width of `embedding`
  embedding/embedder bytes  optional: the embedder's tag, 'dlib' or 'network:<fingerprint of its weights file>'
                            (data/face_embedding.py); `face_files` checks it against the config's embedder

Files are named `<split>-00000-of-00016.tfrecord`. Example order is shuffled (seeded) before sharding, so that
every shard, and every shuffle buffer, mixes identities. Beside the shards, `<split>.shard_lengths.json` records
the number of records of each (as TFDS's dataset_info.json does for its splits), and the reader verifies it: a
shard that lost whole records (truncated at a record boundary, emptied, or deleted from a glob's match) is an
error naming it, not a silently smaller dataset. Shards without it (converted by older versions) are read
unverified.

Convert a VGGFace2-style folder (`<input_dir>/<identity>/<image>.jpg`):

  python -m face2music_jax.data.faces convert --input_dir=/data/vggface2/train --output_dir=/data/vggface2_tfr \
      --split=train --num_shards=256 [--embed=dlib | --embed=network --face_weights=vggface2.npz] [--skip_bad_images]

then set `--config.data.face_source=tfrecords --config.data.face_tfrecords='/data/vggface2_tfr/{split}-*.tfrecord'`.
"""

import contextlib
import fnmatch
import io
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import app, logging
from absl.flags import argparse_flags
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import config_lib
from face2music_jax.data import face_embedding
from face2music_jax.data import images as images_lib
from face2music_jax.data.face_embedding import Embedder, NoFaceError

IMAGE_KEY = 'image/encoded'
FILENAME_KEY = 'image/filename'
LABEL_KEY = 'identity/label'
NAME_KEY = 'identity/name'
EMBEDDING_KEY = 'embedding'
EMBEDDING_DIM_KEY = 'embedding/dim'
EMBEDDER_KEY = 'embedding/embedder'

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# A TFRecord frames each record with 16 bytes: its length (8), a CRC of the length (4) and a CRC of the data (4).
_RECORD_FRAMING_BYTES = 16
# skimage.data.lfw_subset(): the first 100 images are LFW face crops, the other 100 are not faces; with the
# astronaut, config_lib.DEFAULT_FACE_IDENTITIES identities.
_NUM_LFW_FACES = config_lib.DEFAULT_FACE_IDENTITIES - 1
# The astronaut's face box as dlib's HOG detector finds it in skimage.data.astronaut(): rows 83-171, cols 179-267,
# so the crop is framed like the LFW crops.
_ASTRONAUT_FACE = (slice(83, 171), slice(179, 267))
_DEFAULT_SHARDS = {'train': 16, 'test': 4}
_TEST_EVERY = config_lib.DEFAULT_FACES_TEST_EVERY  # Every 10th identity (sorted by name) is a test identity.
# The format of the default faces' directory: 2 records the shards' lengths. A directory of an earlier format
# (`lfw_subset_v<views>`) is left as it is, and the faces are built anew under the current name.
_DEFAULT_FACES_FORMAT = 2
_SHARD_NAME = re.compile(r'(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord')
_JPEG_QUALITY = 95


class FaceDataError(ValueError):
  """Face data is missing, malformed or inconsistent; the message names the file or pattern."""


def make_example(jpeg: bytes, label: int, name: str, filename: str, embedding: np.ndarray | None = None,
                 embedder: str | None = None) -> tf.train.Example:
  """One face record (feature keys in the module docstring); embedding: float [D] or None; embedder: the tag of
  the embedder that computed it, or None."""
  feature = {
      IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
      FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[filename.encode()])),
      LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      NAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
  }
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  if embedding is not None:
    set_embedding(example, embedding, embedder)
  return example


def set_embedding(example: tf.train.Example, embedding: np.ndarray, embedder: str | None = None) -> None:
  """Stores (or replaces) the embedding, float [D], of a face record, and the tag of its embedder (an earlier tag
  is removed when `embedder` is None)."""
  embedding = np.asarray(embedding, np.float32).reshape(-1)
  feature = example.features.feature
  feature[EMBEDDING_KEY].float_list.value[:] = embedding.tolist()
  feature[EMBEDDING_DIM_KEY].int64_list.value[:] = [embedding.size]
  if embedder is None:
    if EMBEDDER_KEY in feature:
      del feature[EMBEDDER_KEY]
  else:
    feature[EMBEDDER_KEY].bytes_list.value[:] = [embedder.encode()]


def shard_paths(output_dir: str, split: str, num_shards: int) -> list[str]:
  return [os.path.join(output_dir, f'{split}-{i:05d}-of-{num_shards:05d}.tfrecord') for i in range(num_shards)]


def shard_lengths_path(output_dir: str, split: str) -> str:
  """The file of the number of records of each shard of a split: `<output_dir>/<split>.shard_lengths.json`."""
  return os.path.join(output_dir, f'{split}.shard_lengths.json')


def write_shard_lengths(output_dir: str, split: str, lengths: dict[str, int]) -> None:
  """Records the number of records of each shard (by file name) of a split, atomically."""
  path = shard_lengths_path(output_dir, split)
  with tf.io.gfile.GFile(path + '.incomplete', 'w') as f:
    json.dump({'split': split, 'shard_lengths': lengths, 'num_records': sum(lengths.values())}, f, indent=2)
  tf.io.gfile.rename(path + '.incomplete', path, overwrite=True)


def _recorded_lengths(directory: str, split: str) -> dict[str, int] | None:
  """The shard lengths recorded for a split in `directory`; None if none are (shards of an older version)."""
  path = shard_lengths_path(directory, split)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      return {str(k): int(v) for k, v in json.load(f)['shard_lengths'].items()}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise FaceDataError(f'{path}, the record counts of the {split!r} shards, is corrupt: {e}') from e


def expected_records(path: str) -> int | None:
  """The number of records that a shard's writer recorded for it; None if its split has no record of them.

  Raises:
    FaceDataError: the split's shard lengths are corrupt or do not list this shard.
  """
  match = _SHARD_NAME.fullmatch(os.path.basename(path))
  if not match:
    return None
  directory = os.path.dirname(path)
  lengths = _recorded_lengths(directory, match['split'])
  if lengths is None:
    return None
  if os.path.basename(path) not in lengths:
    raise FaceDataError(f'Face TFRecord file {path} is not among the shards that '
                        f'{shard_lengths_path(directory, match["split"])} lists: written by another conversion?')
  return lengths[os.path.basename(path)]


@contextlib.contextmanager
def _atomic_writer(path: str) -> Iterator[tf.io.TFRecordWriter]:
  """A TFRecord writer whose file gets its final name only when complete, so an interrupted run leaves no shard
  that a glob would pick up."""
  incomplete = path + '.incomplete'
  writer = tf.io.TFRecordWriter(incomplete)
  try:
    yield writer
  except BaseException:
    writer.close()
    tf.io.gfile.remove(incomplete)
    raise
  writer.close()
  tf.io.gfile.rename(incomplete, path, overwrite=True)


class _Progress:
  """Logs `done/total` with a rate about every 10 s, and once at the end."""

  def __init__(self, what: str, total: int):
    self.what, self.total, self.done = what, total, 0
    self.start = self.last = time.time()

  def update(self, n: int) -> None:
    self.done += n
    now = time.time()
    if now - self.last > 10 or self.done == self.total:
      self.last = now
      logging.info('%s: %d/%d images, %.1f images/s.', self.what, self.done, self.total,
                   self.done / max(now - self.start, 1e-9))


def list_identity_folder(input_dir: str) -> list[tuple[str, str]]:
  """(identity, '<identity>/<image>') of every image in a VGGFace2-style folder, sorted by identity then image."""
  if not tf.io.gfile.isdir(input_dir):
    raise FaceDataError(f'Face image folder {input_dir} does not exist (expected <identity>/<image>.jpg inside).')
  images = []
  for identity in sorted(tf.io.gfile.listdir(input_dir)):
    identity = identity.rstrip('/')
    folder = os.path.join(input_dir, identity)
    if tf.io.gfile.isdir(folder):
      images += [(identity, f'{identity}/{f}')
                 for f in sorted(tf.io.gfile.listdir(folder))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not images:
    raise FaceDataError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) found in {input_dir}: expected the VGGFace2 '
                        'layout <identity>/<image>.jpg.')
  return images


def read_image(path: str, max_pixels: int = images_lib.MAX_PIXELS) -> tuple[bytes, np.ndarray]:
  """JPEG bytes of an image file and its pixels, upright, uint8 [H, W, 3].

  JPEGs are stored as they are, unless their EXIF orientation says that the pixels are stored turned; those and
  other formats are re-encoded. TensorFlow decodes the pixels, as the reader (`face_dataset`) does; the size is
  checked from the header first.

  Raises:
    FaceDataError: naming the file, if it does not decode or is larger than `max_pixels`.
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    encoded = f.read()
  try:
    with images_lib.open_checked(io.BytesIO(encoded), max_pixels) as header:
      transpose = images_lib.orientation_transpose(header)
    pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
  except images_lib.ImageError as e:
    raise FaceDataError(f'Cannot decode image {path}: {e}') from e
  except tf.errors.InvalidArgumentError as e:
    raise FaceDataError(f'Cannot decode image {path}: {e.message}') from e
  if transpose is not None:
    pixels = np.asarray(Image.fromarray(pixels).transpose(transpose))
  if transpose is not None or not tf.io.is_jpeg(encoded):
    encoded = tf.io.encode_jpeg(pixels, quality=_JPEG_QUALITY).numpy()
  return encoded, pixels


def _embed(embedder: Embedder, images: list[np.ndarray], filenames: list[str],
           skip_no_face: bool) -> list[np.ndarray | None]:
  """Embeddings, float32 [D] each, of `images`; None for images without a face when `skip_no_face`."""
  if len({image.shape for image in images}) == 1:
    try:
      return list(_checked_embeddings(embedder, embedder(np.stack(images)), len(images)))
    except NoFaceError as e:
      if not skip_no_face:
        raise NoFaceError(f'{filenames[e.index]}: {e}', e.index) from e
  # Images of different sizes, or a batch with a face missing: one image at a time.
  embeddings = []
  for index, (image, filename) in enumerate(zip(images, filenames)):
    try:
      embeddings.append(_checked_embeddings(embedder, embedder(image[None]), 1)[0])
    except NoFaceError as e:
      if not skip_no_face:
        raise NoFaceError(f'{filename}: {e}', index) from e
      logging.warning('No face found in %s: skipped.', filename)
      embeddings.append(None)
  return embeddings


def _checked_embeddings(embedder: Embedder, embeddings: np.ndarray, n: int) -> np.ndarray:
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.shape != (n, embedder.dim):
    raise FaceDataError(f'{type(embedder).__name__} returned embeddings of shape {embeddings.shape}; expected '
                        f'{(n, embedder.dim)} (its .dim).')
  return embeddings


def _check_output(output_dir: str, split: str, overwrite: bool) -> None:
  existing = tf.io.gfile.glob(os.path.join(output_dir, f'{split}-*-of-*.tfrecord'))
  if existing and not overwrite:
    raise FaceDataError(f'{output_dir} already holds {len(existing)} {split!r} shards, e.g. {existing[0]}; pass '
                        'overwrite=True (--overwrite) to replace them.')
  for path in existing:
    tf.io.gfile.remove(path)
  if tf.io.gfile.exists(shard_lengths_path(output_dir, split)):
    tf.io.gfile.remove(shard_lengths_path(output_dir, split))
  tf.io.gfile.makedirs(output_dir)


def convert_folder(input_dir: str, output_dir: str, split: str, num_shards: int, *, embedder: Embedder | None = None,
                   skip_bad_images: bool = False, overwrite: bool = False, seed: int = 0, batch_size: int = 32,
                   max_image_pixels: int = images_lib.MAX_PIXELS) -> list[str]:
  """Converts a VGGFace2-style folder `<input_dir>/<identity>/<image>.jpg` to sharded face TFRecords.

  Identities are sorted by name and numbered from 0 (stable labels); JPEG files are stored as they are.

  Args:
    input_dir: the folder of identity folders (local or any tf.io.gfile path, e.g. gs://).
    output_dir: where `<split>-0000i-of-<num_shards>.tfrecord` are written.
    split: the split name in the file names, e.g. 'train'.
    num_shards: number of files; at least the number of hosts that will read them.
    embedder: if given, each record also stores its face embedding and the embedder's `tag`, if it has one (e.g.
      `face_embedding.make_embedder(config)`).
    skip_bad_images: skip (with a warning per file and a count) images that do not decode or, with an embedder
      that detects faces, show no face; otherwise the first one raises FaceDataError / NoFaceError naming it.
    overwrite: replace existing shards of this split in `output_dir`.
    seed: seeds the shuffle of the example order.
    batch_size: images given to the embedder at once.
    max_image_pixels: the largest image accepted (width x height), checked from its header before decoding.

  Returns:
    The paths of the written shards (their lengths are recorded beside them: `write_shard_lengths`).
  """
  images = list_identity_folder(input_dir)
  labels = {name: label for label, name in enumerate(sorted({identity for identity, _ in images}))}
  _check_output(output_dir, split, overwrite)
  paths = shard_paths(output_dir, split, num_shards)
  order = np.random.default_rng(seed).permutation(len(images))
  logging.info('Converting %d images of %d identities from %s into %d %r shards in %s%s.', len(images), len(labels),
               input_dir, num_shards, split, output_dir, f' with {type(embedder).__name__}' if embedder else '')
  progress = _Progress(f'{split} shards', len(images))
  tag = getattr(embedder, 'tag', None)
  skipped = 0
  lengths = {}
  for shard, path in enumerate(paths):
    shard_order = order[shard::num_shards]
    lengths[os.path.basename(path)] = 0
    with _atomic_writer(path) as writer:
      for start in range(0, len(shard_order), batch_size):
        chunk = []  # (identity, filename, jpeg, pixels) of the images that decode
        for index in shard_order[start:start + batch_size]:
          identity, filename = images[index]
          try:
            chunk.append((identity, filename, *read_image(os.path.join(input_dir, filename), max_image_pixels)))
          except FaceDataError as e:
            if not skip_bad_images:
              raise
            logging.warning('%s: skipped.', e)
            skipped += 1
        embeddings = [None] * len(chunk)
        if embedder is not None and chunk:
          embeddings = _embed(embedder, [c[3] for c in chunk], [c[1] for c in chunk], skip_bad_images)
        for (identity, filename, jpeg, _), embedding in zip(chunk, embeddings):
          if embedder is not None and embedding is None:
            skipped += 1
            continue
          writer.write(make_example(jpeg, labels[identity], identity, filename, embedding, tag).SerializeToString())
          lengths[os.path.basename(path)] += 1
        progress.update(len(shard_order[start:start + batch_size]))
  write_shard_lengths(output_dir, split, lengths)
  if skipped:
    logging.warning('Skipped %d of %d images of %s (see the warnings above).', skipped, len(images), input_dir)
  logging.info('Wrote %d %r records in %.1f s.', len(images) - skipped, split, time.time() - progress.start)
  return paths


def resolve_files(file_pattern_or_files: str | Sequence[str]) -> list[str]:
  """The files of a glob (sorted) or of an explicit list; FaceDataError naming the pattern if there are none."""
  if isinstance(file_pattern_or_files, str):
    pattern = file_pattern_or_files
    if tf.io.gfile.isdir(pattern):
      raise FaceDataError(f'{pattern} is a directory; give a glob of face TFRecords such as '
                          f'{os.path.join(pattern, "train-*.tfrecord")!r}.')
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
      folder = os.path.dirname(pattern)
      missing = f' (the directory {folder} does not exist)' if folder and not tf.io.gfile.exists(folder) else ''
      raise FaceDataError(f'No face TFRecord files match {pattern!r}{missing}.')
    _check_none_missing(pattern, files)
    return files
  files = list(file_pattern_or_files)
  if not files:
    raise FaceDataError('The list of face TFRecord files is empty.')
  for f in files:
    if not tf.io.gfile.exists(f):
      raise FaceDataError(f'Face TFRecord file {f} does not exist.')
  return files


def _check_none_missing(pattern: str, files: list[str]) -> None:
  """Raises FaceDataError naming a shard that the recorded shard lengths list, that the glob would match, and
  that is gone."""
  splits = {(os.path.dirname(f), m['split']) for f in files if (m := _SHARD_NAME.fullmatch(os.path.basename(f)))}
  for directory, split in sorted(splits):
    for name in sorted(_recorded_lengths(directory, split) or {}):
      path = os.path.join(directory, name)
      if fnmatch.fnmatch(path, pattern) and path not in files:
        raise FaceDataError(f'Face TFRecord file {path} is missing: {shard_lengths_path(directory, split)} lists it '
                            f'among the {split!r} shards.')


def host_files(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """This host's share of the files: every `process_count`-th one, starting at `process_index`."""
  if len(files) < process_count:
    raise FaceDataError(f'{len(files)} face TFRecord files (e.g. {files[0]}) cannot be split over {process_count} '
                        f'hosts, each reading its own files: convert with at least {process_count} shards.')
  return list(files[process_index::process_count])


def read_records(path: str) -> Iterator[tf.train.Example]:
  """The examples of one face TFRecord file, in order; FaceDataError naming the file if it is corrupt or, once
  read to its end, holds fewer or more records than its writer recorded (`expected_records`)."""
  expected, count = expected_records(path), 0
  try:
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      count += 1
      yield tf.train.Example.FromString(record)
  except tf.errors.DataLossError as e:
    raise FaceDataError(f'Face TFRecord file {path} is corrupt or truncated: {e.message}') from e
  if expected is not None and count != expected:
    raise FaceDataError(_wrong_count(path, count, expected))


def _wrong_count(path: str, count: int, expected: int) -> str:
  return (f'Face TFRecord file {path} holds {count} records, but its writer recorded {expected} (records are missing: '
          'truncated?)')


def _first_record(files: Sequence[str]) -> tuple[str, tf.train.Example] | None:
  """(file, record) of the first record of `files`; None if all are empty."""
  for path in files:
    for example in read_records(path):
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
    length = tf.cast(tf.strings.length(record), tf.int64) + _RECORD_FRAMING_BYTES
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


def _preprocess(record: tf.Tensor, path: tf.Tensor, image_size: int, embedding_dim: int,
                with_names: bool) -> dict[str, tf.Tensor]:
  spec = {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
      NAME_KEY: tf.io.FixedLenFeature([], tf.string),
      FILENAME_KEY: tf.io.FixedLenFeature([], tf.string)
  }
  if embedding_dim:
    spec[EMBEDDING_KEY] = tf.io.VarLenFeature(tf.float32)
  features = tf.io.parse_single_example(record, spec)
  image = tf.io.decode_jpeg(features[IMAGE_KEY], channels=3)  # Greyscale JPEGs become 3 equal channels.
  # VGGFace2's loose crops are centred on the face: keep the central square, then resize.
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  side = tf.minimum(height, width)
  image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
  image = tf.image.resize(image, [image_size, image_size], antialias=True) / 255.0
  out = {
      'image': tf.ensure_shape(image, [image_size, image_size, 3]),
      'identity': tf.cast(features[LABEL_KEY], tf.int32)
  }
  if embedding_dim:
    embedding = tf.sparse.to_dense(features[EMBEDDING_KEY])
    message = tf.strings.join([
        'Face TFRecord file ', path, ': the record of ', features[FILENAME_KEY], ' has an embedding of width ',
        tf.strings.as_string(tf.size(embedding)), f', not {embedding_dim}.'
    ])
    with tf.control_dependencies([tf.debugging.Assert(tf.size(embedding) == embedding_dim, [message])]):
      out['embedding'] = tf.reshape(embedding, [embedding_dim])
  if with_names:
    out['name'], out['filename'] = features[NAME_KEY], features[FILENAME_KEY]
  return out


def _face_dataset(file_pattern_or_files: str | Sequence[str], *, image_size: int, batch_size: int, shuffle: bool,
                  repeat: bool, seed: int, process_index: int | None, process_count: int | None,
                  embedding_dim: int | None, drop_remainder: bool, shuffle_buffer: int,
                  with_names: bool) -> tf.data.Dataset:
  files = resolve_files(file_pattern_or_files)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  files = host_files(files, process_index, process_count)
  stored_dim = stored_embedding_dim(files)
  if embedding_dim is not None and stored_dim != embedding_dim:
    found = f'embeddings of width {stored_dim}' if stored_dim else 'no embeddings'
    raise FaceDataError(f'Face TFRecords {files[0]} (and others) hold {found}; expected width {embedding_dim}. '
                        'Precompute them with `python -m face2music_jax.data.face_embedding`.')
  sizes = [tf.io.gfile.stat(f).length for f in files]
  expected = [-1 if (n := expected_records(f)) is None else n for f in files]
  ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64), tf.constant(expected, tf.int64)))
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  # Without shuffling, one file at a time keeps the file order (load_faces relies on it).
  ds = ds.interleave(_checked_records, cycle_length=min(len(files), 8) if shuffle else 1,
                     num_parallel_calls=tf.data.AUTOTUNE if shuffle else None)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed)
  ds = ds.map(lambda record, path: _preprocess(record, path, image_size, stored_dim, with_names),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def face_dataset(file_pattern_or_files: str | Sequence[str], *, image_size: int, batch_size: int, shuffle: bool,
                 repeat: bool, seed: int, process_index: int | None = None, process_count: int | None = None,
                 embedding_dim: int | None = None, drop_remainder: bool = True,
                 shuffle_buffer: int = 2048) -> tf.data.Dataset:
  """Batches of faces from face TFRecords, this host's share of the files.

  Files are split over hosts (each host reads every `process_count`-th file), so hosts may get a few examples
  more or fewer than others: with `repeat=False`, equalise the number of batches before collective steps.

  Args:
    file_pattern_or_files: a glob ('/data/vggface2/train-*.tfrecord') or a list of files.
    image_size: S, the side of the square output images (pixels); faces are centre-cropped to a square first.
    batch_size: examples per batch on this host.
    shuffle: shuffle file order and examples (seeded).
    repeat: repeat forever.
    seed: seeds the shuffles.
    process_index: this host's index; default `jax.process_index()`.
    process_count: the number of hosts; default `jax.process_count()`.
    embedding_dim: the embedding width the caller expects: FaceDataError if the first record holds none or
      another width, an error naming the file if a later one does. None: yield the embeddings the records hold
      (those of the first record's width), if any.
    drop_remainder: drop a last partial batch.
    shuffle_buffer: examples in the shuffle buffer.

  Returns:
    A dataset of dicts: 'image' float32 [B, S, S, 3] in [0, 1], 'identity' int32 [B] and, when the records hold
    embeddings, 'embedding' float32 [B, D]. Corrupt or truncated files, and records of another embedding width,
    fail while iterating with a tf.errors.InvalidArgumentError whose message names the file.
  """
  return _face_dataset(file_pattern_or_files, image_size=image_size, batch_size=batch_size, shuffle=shuffle,
                       repeat=repeat, seed=seed, process_index=process_index, process_count=process_count,
                       embedding_dim=embedding_dim, drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer,
                       with_names=False)


def load_faces(files: str | Sequence[str], image_size: int, embedding_dim: int | None = None) -> dict[str, np.ndarray]:
  """All examples of a small set of face TFRecords, in file order, as numpy arrays (on this host, all files).

  Returns:
    'image' float32 [N, S, S, 3] in [0, 1], 'identity' int32 [N], 'name' and 'filename' str [N] and, when the
    records hold embeddings, 'embedding' float32 [N, D].
  """
  ds = _face_dataset(files, image_size=image_size, batch_size=256, shuffle=False, repeat=False, seed=0, process_index=0,
                     process_count=1, embedding_dim=embedding_dim, drop_remainder=False, shuffle_buffer=1,
                     with_names=True)
  try:
    batches = list(ds.as_numpy_iterator())
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


def face_files(config: ml_collections.ConfigDict, split: str) -> list[str]:
  """The face TFRecords of a split: config.data.face_tfrecords with '{split}' filled in, or the embedded default.

  Raises:
    FaceDataError: the files are missing, or their embeddings are of another embedder than the config's
      (`check_embedder`; the default faces are built per embedder: `default_faces_dir`).
    config_lib.ConfigError: naming config.data.face_weights, if it is missing.
  """
  if config.data.face_source == 'tfrecords':
    pattern = config.data.face_tfrecords
    if '{split}' not in pattern:
      raise FaceDataError(f"config.data.face_tfrecords = {pattern!r} needs a '{{split}}' placeholder, e.g. "
                          "'/data/vggface2/{split}-*.tfrecord'.")
    files = resolve_files(pattern.replace('{split}', split))
    check_embedder(
        files, face_embedding.embedder_tag(config),
        'embed them again with `python -m face2music_jax.data.face_embedding --embed=... '
        '[--face_weights=...]` as config.data.face_embedding and face_weights say, or set those to the '
        'embedder of the records.')
    return files
  files = prepare_default_faces(config)
  if split not in files:
    raise FaceDataError(f'The default faces have splits {sorted(files)}, not {split!r}.')
  return files[split]


def augmented_views(image: np.ndarray, num_views: int, rng: np.random.Generator) -> list[np.ndarray]:
  """`num_views` views of a face, uint8 [H, W] or [H, W, 3] like `image`: view 0 is the image itself; the others
  are crops of 80-95% of the side at a random place, resized back, with brightness scaled by 0.75-1.25, and
  mirrored in odd views (so that view 1 is always a mirror image)."""
  height, width = image.shape[:2]
  views = [image]
  for view in range(1, num_views):
    scale = rng.uniform(0.8, 0.95)
    crop_h, crop_w = round(height * scale), round(width * scale)
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = Image.fromarray(image[top:top + crop_h, left:left + crop_w]).resize((width, height),
                                                                               Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(crop, np.float32) * rng.uniform(0.75, 1.25), 0, 255).round().astype(np.uint8)
    views.append(pixels[:, ::-1] if view % 2 else pixels)
  return views


def _default_identities() -> dict[str, np.ndarray]:
  """Identity name -> uint8 face crop: 100 LFW crops (25x25 greyscale) and the astronaut (88x88 RGB)."""
  lfw = (skimage_data.lfw_subset()[:_NUM_LFW_FACES] * 255).round().astype(np.uint8)
  identities = {f'lfw_{i:03d}': face for i, face in enumerate(lfw)}
  identities['astronaut'] = np.ascontiguousarray(skimage_data.astronaut()[_ASTRONAUT_FACE])
  return identities


def prepare_default_faces(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """Writes the embedded default faces once, with the config's face embeddings, and returns their files per split.

  101 identities (100 real LFW crops, each taken as its own identity, and the astronaut) with
  config.data.face_views augmented views each, split 90/10 by identity into 'train' and 'test'. The views are
  written as JPEG into a temporary `<identity>/<view>.jpg` tree and converted by `convert_folder`, as VGGFace2 is,
  with the embedder of `face_embedding.make_embedder(config)` (dlib's 128-d network, or the Flax network with
  config.data.face_weights) on the whole crops (they are tight and too small for the face detector).

  Returns:
    {'train': [...], 'test': [...]}: files under `default_faces_dir(config)`, a directory of their embedder.

  Raises:
    FaceDataError: naming the index `faces.json` of the built faces, if it is corrupt or names another embedder.
    config_lib.ConfigError: naming config.data.face_weights or embedding_dim, if the weights file is missing or
      unreadable or gives embeddings of another width.
  """
  root = default_faces_dir(config)
  manifest_path = os.path.join(root, 'faces.json')
  expected = face_embedding.embedder_tag(config)
  if not tf.io.gfile.exists(manifest_path):
    _write_default_faces(root, config.data.face_views, config.data.max_default_faces,
                         face_embedding.make_embedder(config, assume_cropped=True))
  try:
    with tf.io.gfile.GFile(manifest_path) as f:
      manifest = json.load(f)
    files = {split: [os.path.join(root, name) for name in names] for split, names in manifest['files'].items()}
    built_with = manifest.get('embedder', manifest['embedding'])  # Manifests of dlib faces had no 'embedder'.
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise FaceDataError(f'{manifest_path}, the index of the default faces, is corrupt ({type(e).__name__}: {e}); '
                        f'delete {root} to build them again.') from e
  if built_with != expected:
    raise FaceDataError(f'The default faces in {root} hold embeddings of the face embedder {built_with!r} '
                        f'({manifest_path}), but the config embeds faces with {expected!r}; delete {root} to build '
                        'them again.')
  return files


def default_faces_dir(config: ml_collections.ConfigDict) -> str:
  """Where the default faces of `config` are built:
  `<data_dir>/faces/lfw_subset_f2_v<face_views>[_n<limit>][_network-<fingerprint>]`, the last part for the Flax
  network's embeddings (the fingerprint of its weights file: `face_embedding.embedder_tag`).

  Raises:
    config_lib.ConfigError: naming config.data.face_weights, if it is missing.
  """
  limit = config.data.max_default_faces
  suffix = f'_n{limit}' if limit else ''
  tag = face_embedding.embedder_tag(config)
  if tag != face_embedding.DlibFaceEmbedder.tag:  # dlib's faces keep the name they had before the network's.
    suffix += '_' + tag.replace(':', '-')
  return os.path.join(config.data_dir, 'faces',
                      f'lfw_subset_f{_DEFAULT_FACES_FORMAT}_v{config.data.face_views}{suffix}')


def _write_default_faces(root: str, num_views: int, limit: int, embedder: Embedder) -> None:
  """Builds the default faces in a fresh directory renamed to `root` when complete, so that a crash leaves no
  partial `root` and processes preparing them at once (e.g. hosts sharing a disk) do not mix their files."""
  start = time.time()
  build = f'{root}.incomplete-{uuid.uuid4().hex}'
  logging.info('Preparing the default faces in %s.', root)
  identities = _default_identities()
  names = sorted(identities)[:limit or None]
  splits = {
      'train': [n for i, n in enumerate(names) if i % _TEST_EVERY != _TEST_EVERY - 1],
      'test': [n for i, n in enumerate(names) if i % _TEST_EVERY == _TEST_EVERY - 1]
  }
  files = {}
  with tempfile.TemporaryDirectory() as tmp:
    for split, split_names in splits.items():
      for name in split_names:
        os.makedirs(os.path.join(tmp, split, name))
        rng = np.random.default_rng(list(name.encode()))  # Views depend on the identity only.
        for view, pixels in enumerate(augmented_views(identities[name], num_views, rng)):
          Image.fromarray(pixels).save(os.path.join(tmp, split, name, f'{view:02d}.jpg'), quality=_JPEG_QUALITY)
      paths = convert_folder(os.path.join(tmp, split), build, split, _DEFAULT_SHARDS[split], embedder=embedder)
      files[split] = [os.path.basename(p) for p in paths]
  manifest = {
      'files': files,
      'identities': {
          s: len(n) for s, n in splits.items()
      },
      'views': num_views,
      'embedding': embedder.tag.split(':')[0],
      'embedder': embedder.tag,
      'embedding_dim': embedder.dim,
      'seconds': round(time.time() - start, 1)
  }
  if isinstance(embedder, face_embedding.FaceNetworkEmbedder):
    manifest['face_weights'] = embedder.weights
  with tf.io.gfile.GFile(os.path.join(build, 'faces.json'), 'w') as f:
    json.dump(manifest, f, indent=2)
  try:
    tf.io.gfile.rename(build, root)
  except tf.errors.OpError:
    if not tf.io.gfile.exists(os.path.join(root, 'faces.json')):
      raise
    tf.io.gfile.rmtree(build)  # Another process finished first; its files are the same.
  logging.info('Prepared the default faces (%s identities, %d views each) in %.1f s.', manifest['identities'],
               num_views,
               time.time() - start)


def add_embeddings(file_pattern_or_files: str | Sequence[str], output_dir: str, embedder: Embedder, *,
                   skip_no_face: bool = False, batch_size: int = 32) -> list[str]:
  """Copies face TFRecords into `output_dir` (same file names) with the embedding of every face stored or replaced.

  Args:
    file_pattern_or_files: a glob or a list of face TFRecords.
    output_dir: must differ from the inputs' directory.
    embedder: maps uint8 [N, H, W, 3] images to float32 [N, D]; its `tag`, if it has one, is stored with each
      embedding (and an earlier tag removed if it has none).
    skip_no_face: drop (with a count) records in which the embedder finds no face, instead of raising NoFaceError.
    batch_size: images given to the embedder at once.

  Returns:
    The written files (with their lengths recorded beside them, when they are named as shards).
  """
  files = resolve_files(file_pattern_or_files)
  outputs = [os.path.join(output_dir, os.path.basename(f)) for f in files]
  for source, target in zip(files, outputs):
    if os.path.abspath(source) == os.path.abspath(target):
      raise FaceDataError(f'add_embeddings would overwrite its input {source}; choose another output_dir.')
  tf.io.gfile.makedirs(output_dir)
  start, total, dropped = time.time(), 0, 0
  tag = getattr(embedder, 'tag', None)
  lengths: dict[str, dict[str, int]] = {}  # split -> shard file name -> records written
  for source, target in zip(files, outputs):
    written = 0
    with _atomic_writer(target) as writer:
      examples = read_records(source)
      while chunk := [example for _, example in zip(range(batch_size), examples)]:
        features = [example.features.feature for example in chunk]
        filenames = [f'{source}: {f[FILENAME_KEY].bytes_list.value[0].decode()}' for f in features]
        images = [tf.io.decode_jpeg(f[IMAGE_KEY].bytes_list.value[0], channels=3).numpy() for f in features]
        for example, embedding in zip(chunk, _embed(embedder, images, filenames, skip_no_face)):
          if embedding is None:
            dropped += 1
            continue
          set_embedding(example, embedding, tag)
          writer.write(example.SerializeToString())
          written += 1
        total += len(chunk)
    if match := _SHARD_NAME.fullmatch(os.path.basename(target)):
      lengths.setdefault(match['split'], {})[os.path.basename(target)] = written
    logging.info('%s: embedded (%d records so far, %.1f records/s).', target, total, total / (time.time() - start))
  for split, split_lengths in lengths.items():
    write_shard_lengths(output_dir, split, split_lengths)
  if dropped:
    logging.warning('Dropped %d of %d records without a detected face.', dropped, total)
  return outputs


def _parse_flags(argv: list[str]):
  parser = argparse_flags.ArgumentParser(description='Face TFRecords (VGGFace2 format).')
  commands = parser.add_subparsers(dest='command', required=True)
  convert = commands.add_parser('convert', help='VGGFace2-style folder <identity>/<image>.jpg -> TFRecords.')
  convert.add_argument('--input_dir', required=True, help='Folder of identity folders.')
  convert.add_argument('--output_dir', required=True)
  convert.add_argument('--split', default='train')
  convert.add_argument('--num_shards', type=int, default=16, help='At least the number of hosts that will read.')
  face_embedding.add_embedder_flags(convert, ('none', *config_lib.FACE_EMBEDDINGS), default='none')
  convert.add_argument('--assume_cropped', action='store_true',
                       help='With --embed: the images are tight face crops, skip face detection.')
  convert.add_argument('--skip_bad_images', action='store_true',
                       help='Skip (and count) images that do not decode or show no face, instead of failing.')
  convert.add_argument('--overwrite', action='store_true', help='Replace existing shards of this split.')
  convert.add_argument('--seed', type=int, default=0, help='Seeds the shuffle of the example order.')
  convert.add_argument('--max_image_pixels', type=int, default=images_lib.MAX_PIXELS,
                       help='The largest image accepted (width x height), checked before decoding.')
  args = parser.parse_args(argv[1:])
  face_embedding.check_embedder_flags(convert, args)
  return args


def main(args) -> None:
  embedder = face_embedding.embedder_from_flags(args)
  convert_folder(args.input_dir, args.output_dir, args.split, args.num_shards, embedder=embedder,
                 skip_bad_images=args.skip_bad_images, overwrite=args.overwrite, seed=args.seed,
                 max_image_pixels=args.max_image_pixels)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
