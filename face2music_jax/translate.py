r"""Translates face photos into notes with a trained model: one WAV file per face.

  python -m face2music_jax.translate --workdir=/ckpt/aux [--config=configs/aux.py] [--pitch=60] \
      [--output_dir=out/] [--overwrite] photo1.jpg photo2.png ...

Each image goes through dlib's HOG face detector and 128-d face-recognition network (config.data.face_embedding
== 'dlib'), then the generator of the latest checkpoint in --workdir (eval mode) writes `config.audio.length`
samples at `config.audio.sample_rate` to `<output_dir>/<image name>.wav` (16-bit PCM). Without --config, the
config is the one training wrote to `<workdir>/config.json`. Existing outputs are kept unless --overwrite is
given; every input is checked before anything is written.
"""

import os
import sys
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags
from PIL import Image
from PIL import UnidentifiedImageError

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import evaluate
from face2music_jax import stages
from face2music_jax.audio import wav as wav_lib
from face2music_jax.data.face_embedding import DlibFaceEmbedder, NoFaceError

DEFAULT_PITCH = 60


class TranslationError(ValueError):
  """An input cannot be translated, or an output exists; the message names the file."""


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 RGB [H, W, 3]; TranslationError naming the file if it is missing or not an image."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except (OSError, UnidentifiedImageError) as e:
    raise TranslationError(f'Cannot read the image {path}: {e}') from e


def output_paths(images: Sequence[str], output_dir: str, overwrite: bool) -> list[str]:
  """`<output_dir>/<image stem>.wav` per image; TranslationError if two collide, or one exists without overwrite."""
  paths = [os.path.join(output_dir, os.path.splitext(os.path.basename(image))[0] + '.wav') for image in images]
  seen = {}
  for image, path in zip(images, paths):
    if path in seen:
      raise TranslationError(f'{seen[path]} and {image} would both be written to {path}: translate them into '
                             'different --output_dir.')
    seen[path] = image
    if os.path.exists(path) and not overwrite:
      raise TranslationError(f'{path} exists already: pass --overwrite to replace it.')
  return paths


def pitch_class(config: ml_collections.ConfigDict, midi_pitch: int) -> int:
  """The generator's pitch class of a MIDI pitch; TranslationError outside the config's range."""
  low, high = config.audio.pitch_min, config.audio.pitch_max
  if not low <= midi_pitch <= high:
    raise TranslationError(f'--pitch={midi_pitch} is outside the MIDI pitches {low}..{high} this model was trained '
                           'on (config.audio.pitch_min/pitch_max).')
  return midi_pitch - low


def embed_faces(config: ml_collections.ConfigDict, images: Sequence[str]) -> np.ndarray:
  """Face embeddings f(x) [N, embedding_dim] of image files; TranslationError naming a file without a face."""
  if config.data.face_embedding != 'dlib':
    raise TranslationError(f"translate embeds faces with dlib; config.data.face_embedding = "
                           f"{config.data.face_embedding!r} is not supported yet.")
  embedder = DlibFaceEmbedder()
  embeddings = []
  for path in images:
    try:
      embeddings.append(embedder(read_image(path)[None])[0])
    except NoFaceError as e:
      raise TranslationError(f'No usable face in {path}: the face detector found none.') from e
  return np.stack(embeddings)


def translate(config: ml_collections.ConfigDict, workdir: str, images: Sequence[str], *,
              midi_pitch: int = DEFAULT_PITCH, output_dir: str = '', overwrite: bool = False) -> list[str]:
  """Writes one WAV per face image and returns their paths.

  Args:
    config: the config the model was trained with.
    workdir: the training work directory (its latest checkpoint is used).
    images: image files (JPEG, PNG, ...), each showing a face.
    midi_pitch: the MIDI pitch of every note, within config.audio.pitch_min..pitch_max.
    output_dir: where the WAV files go; '' = <workdir>/translations.
    overwrite: replace existing WAV files.

  Raises:
    TranslationError: no images, an unreadable image, an image without a face, a pitch out of range, or an
      existing output without `overwrite`.
    checkpoint.CheckpointError: no checkpoint in workdir, or one of another config.
    PermissionError: the output directory cannot be written.
  """
  if not images:
    raise TranslationError('No images given: pass one or more face image files.')
  output_dir = output_dir or os.path.join(workdir, 'translations')
  pitch = pitch_class(config, midi_pitch)
  paths = output_paths(images, output_dir, overwrite)
  for image in images:
    if not os.path.isfile(image):
      raise TranslationError(f'Cannot read the image {image}: no such file.')
  stages.check_writable(output_dir, 'output directory')
  z = embed_faces(config, images)
  models, g_vars, _ = evaluate.restore_generator(config, workdir)
  generate = jax.jit(lambda zz, p: models.generate(g_vars, zz, p, train=False)[0])
  audio = stages.batched(generate, z, np.full(len(z), pitch, np.int32), batch_size=config.eval.batch_size)
  os.makedirs(output_dir, exist_ok=True)
  for path, clip in zip(paths, audio):
    wav_lib.write_wav(path, clip, config.audio.sample_rate)
  return paths


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the CLI's absl flags; only when run as a program, so importing this module defines no global flags."""
  config_flags.DEFINE_config_file('config', None, 'Config file (default: <workdir>/config.json).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Work directory of the trained model.')
  flags.DEFINE_integer('pitch', DEFAULT_PITCH, 'MIDI pitch of the notes, within the config\'s pitch range.')
  flags.DEFINE_string('output_dir', '', 'Where the WAV files go (default: <workdir>/translations).')
  flags.DEFINE_bool('overwrite', False, 'Replace existing WAV files.')
  flags.mark_flag_as_required('workdir')


def main(argv: Sequence[str]) -> None:
  try:
    config = config_lib.load_config(FLAGS.workdir, FLAGS.config)
    paths = translate(config, FLAGS.workdir, argv[1:], midi_pitch=FLAGS.pitch, output_dir=FLAGS.output_dir,
                      overwrite=FLAGS.overwrite)
  except (TranslationError, checkpoint.CheckpointError, config_lib.ConfigError, PermissionError) as e:
    sys.exit(f'Error: {e}')
  for path in paths:
    print(path)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
