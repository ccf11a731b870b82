"""The face records: their format, the checked reading of their files, the converter from the VGGFace2 folder
layout, the tool that adds embeddings to existing records, and the command line of both.

Faces are stored as sharded TFRecords. Each record is a `tf.train.Example` with these features:

  image/encoded    bytes    the face image, JPEG (VGGFace2's loose crops; any size, RGB or greyscale)
  image/filename   bytes    path inside the source folder, '<identity>/<image>.jpg'
  identity/label   int64    index of the identity among the split's identity names, sorted
  identity/name    bytes    the identity's name, e.g. VGGFace2's 'n000002'
  embedding        float[D] optional: the precomputed face embedding f(x)
  embedding/dim    int64    optional: D, the width of `embedding`
  embedding/embedder bytes  optional: the embedder's tag, 'dlib' or 'network:<fingerprint of its weights file>'
                            (faces/embedding.py); `data/faces.py: face_files` checks it against the
                            config's embedder

Files are named `<split>-00000-of-00016.tfrecord`. Example order is shuffled (seeded) before sharding, so that
every shard mixes identities. Beside the shards, `<split>.shard_lengths.json` records the number of records of
each (as TFDS's dataset_info.json does for its splits), and the readers verify it: a shard that lost whole records
(truncated at a record boundary, emptied, or deleted from a glob's match) is an error naming it, not a silently
smaller dataset. Shards without it (converted by older versions) are read unverified.

The readers of sets of records for the models (host split, embeddings, images) are in `data/faces.py`; the
embedded default faces in `data/default_faces.py`.

Command line. Convert a VGGFace2-style folder (`<input_dir>/<identity>/<image>.jpg`):

  python -m face2music_jax.faces.records convert --input_dir=/data/vggface2/train \
      --output_dir=/data/vggface2_tfr --split=train --num_shards=256 \
      [--embed=dlib | --embed=network --face_weights=vggface2.npz] [--skip_bad_images]

then set `--config.data.face_source=tfrecords --config.data.face_tfrecords='/data/vggface2_tfr/{split}-*.tfrecord'`.
Add (or replace) the embeddings of existing records, e.g. of your own images converted without `--embed`:

  python -m face2music_jax.faces.records embed --input='/data/faces/train-*.tfrecord' \
      --output_dir=/data/faces_dlib [--embed=network --face_weights=vggface2.npz] [--assume_cropped] [--skip_no_face]
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import re
import time
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import app, logging
from absl.flags import argparse_flags
from PIL import Image

from face2music_jax import config_lib
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import images as images_lib
from face2music_jax.faces.embedding import Embedder, NoFaceError

IMAGE_KEY = 'image/encoded'
FILENAME_KEY = 'image/filename'
LABEL_KEY = 'identity/label'
NAME_KEY = 'identity/name'
EMBEDDING_KEY = 'embedding'
EMBEDDING_DIM_KEY = 'embedding/dim'
EMBEDDER_KEY = 'embedding/embedder'

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# A TFRecord frames each record with 16 bytes: its length (8), a CRC of the length (4) and a CRC of the data (4).
RECORD_FRAMING_BYTES = 16
_SHARD_NAME = re.compile(r'(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord')
# The quality of the JPEGs that the converter encodes (images it re-encodes, the default faces' views).
JPEG_QUALITY = 95


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
  other formats are re-encoded. TensorFlow decodes the pixels, as the reader (`data/faces.py: load_faces`) does; the
  size is checked from the header first.

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
    encoded = tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY).numpy()
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
  embed = commands.add_parser('embed', help='Adds (or replaces) the face embeddings of face TFRecords.')
  embed.add_argument('--input', required=True, help="Glob of face TFRecords, e.g. '/data/faces/train-*.tfrecord'.")
  embed.add_argument('--output_dir', required=True, help='Where the files, with embeddings, are written.')
  face_embedding.add_embedder_flags(embed)
  embed.add_argument('--assume_cropped', action='store_true', help='Images are tight face crops: skip face detection.')
  embed.add_argument('--skip_no_face', action='store_true',
                     help='Drop (and count) images without a detected face instead of failing.')
  embed.add_argument('--num_jitters', type=int, default=0, help='With --embed=dlib: jittered copies to average.')
  args = parser.parse_args(argv[1:])
  face_embedding.check_embedder_flags(convert if args.command == 'convert' else embed, args)
  return args


def main(args) -> None:
  if args.command == 'embed':
    embedder = face_embedding.embedder_from_flags(args, args.num_jitters)
    add_embeddings(args.input, args.output_dir, embedder, skip_no_face=args.skip_no_face)
    return
  embedder = face_embedding.embedder_from_flags(args)
  convert_folder(args.input_dir, args.output_dir, args.split, args.num_shards, embedder=embedder,
                 skip_bad_images=args.skip_bad_images, overwrite=args.overwrite, seed=args.seed,
                 max_image_pixels=args.max_image_pixels)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
