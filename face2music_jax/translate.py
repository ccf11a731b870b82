"""Translates face photos into WAV files with a `Translator` (the command line: run_translate.py, face2music
translate).

Each photo, or each image of a folder, is read upright in 8 bits (faces/images.py; one larger than
`max_image_pixels` is refused before decoding); every face the detector finds is embedded and given a note at the
requested pitch, or the whole of a melody, written to `<output_dir>/<photo stem>_face<k>.wav` (k = 0, 1, ... left
to right, whatever the number of faces). A photo that cannot be read or shows no face is reported and skipped; the
others are translated. With `group` the faces of each photo also play in turn, left to right, into
`<stem>_group.wav`; with `boxes` the photo is written with its numbered face boxes to `<stem>_boxes.png`.

Every photo is read and every face found before anything is written; an existing output is an error unless
`overwrite` is given; with it, `<stem>_face<k>.wav` files of faces beyond those found now (an earlier translation
of the photo found more) are removed. The outputs are written all or none (files.staged): a full disk or Ctrl-C
half way leaves the output directory as it was. A photo named twice (a folder and a file in it) is translated once.
"""

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

from face2music_jax import files
from face2music_jax.audio import melody as melody_lib
from face2music_jax.audio import wav as wav_lib
from face2music_jax.faces import images as images_lib

DEFAULT_PITCH = 'C4'
_GAP_S = 0.25  # Silence between faces in a group piece.


class TranslationError(ValueError):
  """An input cannot be translated, or an output exists; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Translation:
  """One face of a photo and where its note was written.

  Attributes:
    image: the photo.
    box: the face's (left, top, right, bottom) in the photo's pixels (right and bottom inclusive).
    wav: the WAV file of its note (or melody).
  """
  image: str
  box: tuple[int, int, int, int]
  wav: str


def expand(paths: Sequence[str]) -> list[str]:
  """Image files, with each folder replaced by its images (sorted; not recursive).

  Raises:
    TranslationError: no paths, a path that does not exist, or a folder without images.
  """
  if not paths:
    raise TranslationError('No images given: pass one or more photos or folders of photos.')
  images = []
  for path in paths:
    if os.path.isdir(path):
      found = images_lib.image_files(path)
      if not found:
        raise TranslationError(f'The folder {path} holds no image ({", ".join(images_lib.IMAGE_EXTENSIONS)}).')
      images.extend(found)
    elif os.path.isfile(path):
      images.append(path)
    else:
      raise TranslationError(f'Cannot read the image {path}: no such file or folder.')
  return images


def _stem(image: str) -> str:
  return os.path.splitext(os.path.basename(image))[0]


def draw_boxes(pixels: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> Image.Image:
  """The photo with each face's box and its number (0, 1, ... left to right)."""
  picture = Image.fromarray(pixels)
  draw = ImageDraw.Draw(picture)
  width = max(2, round(max(pixels.shape[:2]) / 300))
  for k, (left, top, right, bottom) in enumerate(boxes):
    draw.rectangle((left, top, right, bottom), outline=(255, 220, 0), width=width)
    draw.text((left + width + 2, top + width + 2), str(k), fill=(255, 220, 0), font_size=max(12, (bottom - top) // 4))
  return picture


def translate(translator, images: Sequence[str], *, pitch: int | str = DEFAULT_PITCH,
              melody: str | Sequence[melody_lib.Note] | None = None, output_dir: str = '.', overwrite: bool = False,
              group: bool = False, boxes: bool = False,
              max_image_pixels: int = images_lib.MAX_PIXELS) -> tuple[list[Translation], list[str]]:
  """Writes one WAV per face of each photo (module docstring).

  Args:
    translator: the model (`translator.Translator`).
    images: photos and folders of photos.
    pitch: MIDI number or note name of every note (ignored with `melody`).
    melody: a note list ('C4 E4 G4:2') or notes (audio/melody.py): each face plays all of it.
    output_dir: where the files go.
    overwrite: replace existing files.
    group: also write each photo's faces in turn, left to right, to `<stem>_group.wav`.
    boxes: also write each photo with its numbered face boxes to `<stem>_boxes.png`.
    max_image_pixels: the largest image accepted (width x height), checked before decoding.

  Returns:
    (the translations, photo by photo, left to right; the photos skipped, each with why).

  Raises:
    TranslationError: no images, a missing path, a bad pitch or melody, two photos with one stem, an existing
      output without `overwrite`, or no face in any photo.
    PermissionError: the output directory cannot be written.
  """
  from face2music_jax import translator as translator_lib  # pylint: disable=import-outside-toplevel
  paths = expand(images)
  notes = None
  try:
    if melody is not None:
      notes = melody_lib.parse(melody) if isinstance(melody, str) else list(melody)
      for note in notes:
        translator.midi(note.midi)
    else:
      midi = translator.midi(pitch)
  except ValueError as e:
    raise TranslationError(str(e)) from e
  files.check_writable(output_dir, 'output directory')
  unique = {}  # The same photo named twice (a folder and a file in it, or two spellings) is translated once.
  for path in paths:
    unique.setdefault(os.path.realpath(path), path)
  paths = list(unique.values())
  stems: dict[str, str] = {}
  for path in paths:
    if _stem(path) in stems:
      raise TranslationError(f'{stems[_stem(path)]} and {path} would be written to the same files: translate them '
                             'into different output directories.')
    stems[_stem(path)] = path

  found, skipped = [], []
  for path in paths:
    try:
      pixels = translator_lib.to_rgb(path, max_image_pixels)
      embeddings, face_boxes = translator.faces(pixels)
    except images_lib.ImageError as e:
      skipped.append(f'{path}: cannot read the image: {e}')
      continue
    except translator_lib.NoFaceError:
      skipped.append(f'{path}: no face found')
      continue
    found.append((path, pixels, embeddings, [tuple(int(v) for v in b) for b in face_boxes]))
  if not found:
    raise TranslationError('No face found in any image: ' + '; '.join(skipped))

  outputs = []
  for path, _, _, face_boxes in found:
    names = [f'{_stem(path)}_face{k}.wav' for k in range(len(face_boxes))]
    names += [f'{_stem(path)}_group.wav'] * group + [f'{_stem(path)}_boxes.png'] * boxes
    outputs.extend(os.path.join(output_dir, n) for n in names)
  existing = [p for p in outputs if os.path.exists(p)]
  if existing and not overwrite:
    raise TranslationError(f'{existing[0]} exists already ({len(existing)} of the outputs do): pass --overwrite to '
                           'replace them.')

  # Faces that an earlier translation of a photo found beyond the ones found now: replaced outputs, so they go too.
  stale = [
      os.path.join(output_dir, name)
      for path, _, _, face_boxes in found
      for name in _face_wavs(output_dir, _stem(path))
      if int(name[len(_stem(path)) + 5:-4]) >= len(face_boxes)
  ] if overwrite else []

  translations = []
  sample_rate = translator.sample_rate
  with files.staged(output_dir) as stage:  # All of the outputs, or none (a full disk, Ctrl-C).
    for path, pixels, embeddings, face_boxes in found:
      if notes is not None:
        audio = [translator.render_melody(z, notes) for z in embeddings]
      else:
        audio = list(translator.generate(embeddings, np.full(len(embeddings), midi)))
      for k, (clip, box) in enumerate(zip(audio, face_boxes)):
        name = f'{_stem(path)}_face{k}.wav'
        wav_lib.write_wav(stage(name), clip, sample_rate)
        translations.append(Translation(image=path, box=box, wav=os.path.join(output_dir, name)))
      if group:
        gap = np.zeros(int(_GAP_S * sample_rate), np.float32)
        piece = np.concatenate([part for clip in audio for part in (clip, gap)][:-1])
        wav_lib.write_wav(stage(f'{_stem(path)}_group.wav'), piece, sample_rate)
      if boxes:
        draw_boxes(pixels, face_boxes).save(stage(f'{_stem(path)}_boxes.png'))
  for path in stale:
    with files.writing(path):
      os.remove(path)
  return translations, skipped


def _face_wavs(output_dir: str, stem: str) -> list[str]:
  """The names `<stem>_face<k>.wav` in `output_dir`."""
  if not os.path.isdir(output_dir):
    return []
  pattern = re.compile(re.escape(stem) + r'_face[0-9]+\.wav')
  return sorted(
      n for n in os.listdir(output_dir) if pattern.fullmatch(n) and os.path.isfile(os.path.join(output_dir, n)))
