"""Translates face photos into notes with a trained model: one WAV file per face (command line: run_translate.py).

Each photo (turned upright by its EXIF orientation, 16-bit images scaled to 8 bits, one larger than
`max_image_pixels` refused before decoding: data/images.py) goes through dlib's HOG face detector (on a copy
shrunk to a few megapixels when larger); every face it finds is aligned and embedded by the config's face embedder
(data/face_embedding.py: make_embedder; dlib's 128-d network, or the Flax network of config.data.face_weights when
config.data.face_embedding == 'network'), then the generator of the newest checkpoint of the work directory that
verifies (eval mode) writes `config.audio.length` samples at `config.audio.sample_rate` (16-bit PCM) to
`<output_dir>/<photo stem>.wav` when the photo shows one face, or to `<output_dir>/<photo stem>_face<k>.wav`
(k = 0, 1, ... from left to right) when it shows several. Existing outputs are kept unless `overwrite` is given;
every input is checked, and every face found, before anything is written.
"""

import dataclasses
import functools
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from face2music_jax import files
from face2music_jax import gan
from face2music_jax import loops
from face2music_jax.audio import wav as wav_lib
from face2music_jax.data import face_embedding
from face2music_jax.data import images as images_lib
from face2music_jax.data.face_embedding import NoFaceError

DEFAULT_PITCH = 60


class TranslationError(ValueError):
  """An input cannot be translated, or an output exists; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Translation:
  """One face of a photo and where its note was written.

  Attributes:
    image: the photo.
    box: the face's (left, top, right, bottom) in the photo's pixels (right and bottom inclusive).
    wav: the WAV file of its note.
  """
  image: str
  box: tuple[int, int, int, int]
  wav: str


def read_image(path: str, max_pixels: int = images_lib.MAX_PIXELS) -> np.ndarray:
  """An image file as upright uint8 RGB [H, W, 3] (EXIF orientation applied, 16-bit and other modes converted:
  data/images.py).

  Raises:
    TranslationError: naming the file, if it is missing, not an image, or larger than `max_pixels` (checked from
      its header, before decoding).
  """
  try:
    return images_lib.read_rgb(path, max_pixels)
  except images_lib.ImageError as e:
    raise TranslationError(f'Cannot read the image {path}: {e}') from e


def _stem(image: str) -> str:
  return os.path.splitext(os.path.basename(image))[0]


def output_paths(images: Sequence[str], num_faces: Sequence[int], output_dir: str, overwrite: bool) -> list[str]:
  """The WAV file of every face, photo by photo: `<output_dir>/<stem>.wav` for a photo with one face,
  `<output_dir>/<stem>_face<k>.wav` for each of several.

  Raises:
    TranslationError: two faces would be written to one file, or a file exists without `overwrite`.
  """
  seen, paths = {}, []
  for image, count in zip(images, num_faces):
    names = [_stem(image)] if count == 1 else [f'{_stem(image)}_face{k}' for k in range(count)]
    for name in names:
      path = os.path.join(output_dir, name + '.wav')
      if path in seen:
        raise TranslationError(f'{seen[path]} and {image} would both be written to {path}: translate them into '
                               'different --output_dir.')
      seen[path] = image
      if os.path.exists(path) and not overwrite:
        raise TranslationError(f'{path} exists already: pass --overwrite to replace it.')
      paths.append(path)
  return paths


def pitch_class(config: ml_collections.ConfigDict, midi_pitch: int) -> int:
  """The generator's pitch class of a MIDI pitch; TranslationError outside the config's range."""
  low, high = config.audio.pitch_min, config.audio.pitch_max
  if not low <= midi_pitch <= high:
    raise TranslationError(f'--pitch={midi_pitch} is outside the MIDI pitches {low}..{high} this model was trained '
                           'on (config.audio.pitch_min/pitch_max).')
  return midi_pitch - low


def embed_faces(config: ml_collections.ConfigDict, image_files: Sequence[str],
                max_pixels: int = images_lib.MAX_PIXELS) -> list[tuple[np.ndarray, np.ndarray]]:
  """Every face of each image file, left to right: per image, (embeddings f(x) [K, embedding_dim], boxes [K, 4]:
  (left, top, right, bottom) pixels), by the config's face embedder (`face_embedding.make_embedder`).

  Raises:
    TranslationError: naming a file without a face, or one that cannot be read (`read_image`).
    config_lib.ConfigError: naming config.data.face_weights or embedding_dim, if the network's weights file is
      missing or unreadable or gives embeddings of another width.
  """
  embedder = face_embedding.make_embedder(config)
  faces = []
  for path in image_files:
    try:
      faces.append(embedder.all_faces(read_image(path, max_pixels)))
    except NoFaceError as e:
      raise TranslationError(f'No usable face in {path}: the face detector found none.') from e
  return faces


def translate(config: ml_collections.ConfigDict, workdir: str, images: Sequence[str], *,
              midi_pitch: int = DEFAULT_PITCH, output_dir: str = '', overwrite: bool = False,
              max_image_pixels: int = images_lib.MAX_PIXELS) -> list[Translation]:
  """Writes one WAV per face of each photo (module docstring) and returns where, photo by photo, left to right.

  Args:
    config: the config the model was trained with.
    workdir: the training work directory (its latest checkpoint is used).
    images: image files (JPEG, PNG, ...), each showing one or more faces.
    midi_pitch: the MIDI pitch of every note, within config.audio.pitch_min..pitch_max.
    output_dir: where the WAV files go; '' = <workdir>/translations.
    overwrite: replace existing WAV files.
    max_image_pixels: the largest image accepted (width x height), checked before decoding.

  Raises:
    TranslationError: no images, an unreadable or too large image, an image without a face, a pitch out of range,
      two faces with one output file, or an existing output without `overwrite`.
    config_lib.ConfigError: the face network's weights file is missing or unreadable, or gives embeddings of
      another width than config.data.embedding_dim.
    checkpoint.CheckpointError: no checkpoint in workdir, or one of another config.
    PermissionError: the output directory cannot be written.
  """
  if not images:
    raise TranslationError('No images given: pass one or more face image files.')
  output_dir = output_dir or os.path.join(workdir, 'translations')
  pitch = pitch_class(config, midi_pitch)
  for image in images:
    if not os.path.isfile(image):
      raise TranslationError(f'Cannot read the image {image}: no such file.')
  files.check_writable(output_dir, 'output directory')
  faces = embed_faces(config, images, max_image_pixels)
  paths = output_paths(images, [len(boxes) for _, boxes in faces], output_dir, overwrite)
  generator, g_vars, _ = gan.restore_generator(config, workdir)
  z = np.concatenate([embeddings for embeddings, _ in faces])
  audio = loops.batched(functools.partial(gan.make_generate(generator), g_vars), z, np.full(len(z), pitch, np.int32),
                        batch_size=config.eval.batch_size)
  os.makedirs(output_dir, exist_ok=True)
  for path, clip in zip(paths, audio):
    wav_lib.write_wav(path, clip, config.audio.sample_rate)
  boxes = [(image, tuple(int(v) for v in box)) for image, (_, image_boxes) in zip(images, faces) for box in image_boxes]
  return [Translation(image=image, box=box, wav=path) for (image, box), path in zip(boxes, paths)]
