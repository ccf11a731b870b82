"""Translator: a trained model loaded for inference, and faces in images -> notes and melodies.

  from face2music_jax import Translator
  translator = Translator.load()                      # the shipped model (face2music_jax/assets/default_model)
  for face in translator.translate('group.jpg', pitch='C4'):
    print(face.box, face.audio.shape, face.sample_rate)
  translator.write_wavs('group.jpg', 'out/')          # one WAV per face, left to right

A model is either an exported *bundle* (a directory with `manifest.json`, `config.json` and `generator.msgpack`:
`export_bundle` writes one from a work directory; the shipped model is one) or a training *work directory* (its
newest checkpoint that verifies). A bundle's files are checked against the SHA-256 sums of its manifest when it
is loaded: a changed or missing file is a `BundleError` naming it, never a silently wrong note.

Loading a bundle imports neither TensorFlow nor Orbax; the generator is compiled once per batch size (faces are
padded to a multiple of 8) and JAX's persistent compilation cache (under the cache root) keeps the compiled code
between processes.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import jax_cache
from face2music_jax.audio import melody as melody_lib
from face2music_jax.audio import wav as wav_lib
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import images as images_lib
from face2music_jax.models import generator as g_lib

# The shipped model: package data, so that an install carries it.
DEFAULT_BUNDLE = os.path.join(os.path.dirname(__file__), 'assets', 'default_model')
MANIFEST = 'manifest.json'
CONFIG = 'config.json'
GENERATOR = 'generator.msgpack'
BUNDLE_FORMAT = 1
_PAD = 8  # Faces per compiled batch are padded to a multiple of this: few shapes, few compilations.


class BundleError(ValueError):
  """A model bundle is missing, incomplete or altered; the message names the file."""


class NoFaceError(ValueError):
  """An image shows no face the detector can find; the message names the image."""


@dataclasses.dataclass(frozen=True)
class FaceNote:
  """One face of an image and its note (or melody).

  Attributes:
    box: the face's (left, top, right, bottom) in the image's pixels (right and bottom inclusive).
    audio: float32 [T] waveform.
    sample_rate: Hz.
    midi_pitch: the MIDI pitch of the note (None for a melody).
  """
  box: tuple[int, int, int, int]
  audio: np.ndarray
  sample_rate: int
  midi_pitch: int | None = None


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(1 << 20):
      digest.update(block)
  return digest.hexdigest()


def read_bundle(directory: str) -> tuple[dict[str, Any], ml_collections.ConfigDict, bytes]:
  """A bundle's manifest, config and generator bytes, each file checked against the manifest's SHA-256.

  Raises:
    BundleError: naming the directory or file that is missing, unreadable or altered.
  """
  manifest_path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(manifest_path):
    raise BundleError(f'{directory} is not a model bundle: it has no {MANIFEST}.')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
    sums = manifest['sha256']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise BundleError(f'{manifest_path} is corrupt ({e}): export the bundle again.') from e
  if manifest.get('format') != BUNDLE_FORMAT:
    raise BundleError(f'{manifest_path} has format {manifest.get("format")!r}; this version reads {BUNDLE_FORMAT}.')
  for name in (CONFIG, GENERATOR):
    path = os.path.join(directory, name)
    if name not in sums:
      raise BundleError(f'{manifest_path} lists no checksum for {name}: export the bundle again.')
    if not os.path.isfile(path):
      raise BundleError(f'{path} is missing from the model bundle.')
    if _sha256(path) != sums[name]:
      raise BundleError(f'{path} does not match the checksum in {manifest_path}: the bundle is damaged; '
                        'export it again (or reinstall the package for the shipped model).')
  try:
    with open(os.path.join(directory, CONFIG)) as f:
      config = config_lib.from_dict(config_lib.tuples(json.load(f)), os.path.join(directory, CONFIG))
  except (ValueError, config_lib.ConfigError) as e:  # Matched its checksum: written so by the export.
    raise BundleError(f'{os.path.join(directory, CONFIG)} is not a model config ({e}): export the bundle again.') from e
  with open(os.path.join(directory, GENERATOR), 'rb') as f:
    blob = f.read()
  return manifest, config, blob


def _git_commit() -> str:
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(__file__), capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def _check_bundle_target(workdir: str, out_dir: str) -> None:
  """Refuses to replace a folder that is not a bundle: the export replaces `out_dir` whole.

  Raises:
    BundleError: `out_dir` is the work directory, lies inside it or holds it, or is a non-empty folder without a
      manifest.json (not a bundle).
  """
  work = os.path.realpath(workdir)
  out = os.path.realpath(out_dir)
  if os.path.commonpath([work, out]) in (work, out):
    raise BundleError(f'The bundle directory {out_dir} is, holds or lies inside the work directory {workdir}: the '
                      'export replaces it whole; choose another --out.')
  if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, MANIFEST)):
    raise BundleError(f'{out_dir} exists and is not a model bundle (no {MANIFEST}): the export replaces it whole; '
                      'choose an empty or new directory.')


def export_bundle(workdir: str, out_dir: str, measures: dict[str, Any] | None = None,
                  command: str = '') -> dict[str, Any]:
  """Writes the generator of `workdir`'s newest verified checkpoint as a bundle into `out_dir` (replaced whole).

  Args:
    workdir: a training work directory (its config.json and checkpoints).
    out_dir: the bundle's directory: new, empty or a bundle (replaced whole).
    measures: measures to record in the manifest; None: those of `<workdir>/eval/metrics.json` (held-out faces) and
      `<workdir>/eval_photos/metrics.json` (a folder of photos) where they exist.
    command: the command that trained the model, for the manifest.

  Returns:
    The manifest.
  """
  # pylint: disable-next=import-outside-toplevel  (Orbax: only here, not on load)
  from face2music_jax import gan, workdir as workdir_lib
  out_dir = os.path.abspath(out_dir)  # Also drops a trailing slash: the build folder goes beside it, not inside.
  _check_bundle_target(workdir, out_dir)
  config = workdir_lib.run_config(workdir)
  _, g_vars, step = gan.restore_generator(config, workdir)
  blob = flax.serialization.to_bytes(gan.to_host(g_vars))
  if measures is None:
    measures = {}
    for key, name, part in (('held_out', 'eval', 'metrics'), ('photos', 'eval_photos', 'headline')):
      path = os.path.join(workdir, name, 'metrics.json')
      if os.path.isfile(path):
        try:
          with open(path, 'rb') as f:
            measures[key] = json.loads(f.read())[part]
        except (ValueError, KeyError, TypeError, OSError) as e:  # Damaged: the manifest goes without it.
          logging.warning(
              '%s is unreadable (%s): its measures are not recorded in the manifest; rerun the '
              'evaluation to record them.', path, e)
  config_text = json.dumps(config.to_dict(), indent=2, sort_keys=True).encode()
  build = f'{out_dir}.incomplete'
  shutil.rmtree(build, ignore_errors=True)
  os.makedirs(build)
  files.write_bytes(os.path.join(build, CONFIG), config_text)
  files.write_bytes(os.path.join(build, GENERATOR), blob)
  manifest = {
      'format': BUNDLE_FORMAT,
      'name': f'{config.name}_{config.size}',
      'command': command or f'python run_train.py --config=configs/{config.name}.py:{config.size}',
      'commit': _git_commit(),
      'seed': config.seed,
      'step': int(step),
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'face_embedding': config.data.face_embedding,
      'face_embedder': face_embedding.embedder_tag(config),  # 'network:<fingerprint of the weights>' or 'dlib'.
      'pitch_range': [config.audio.pitch_min, config.audio.pitch_max],
      'sample_rate': config.audio.sample_rate,
      'measures': measures,
      'sha256': {
          CONFIG: hashlib.sha256(config_text).hexdigest(),
          GENERATOR: hashlib.sha256(blob).hexdigest()
      },
  }
  files.write_bytes(os.path.join(build, MANIFEST), json.dumps(manifest, indent=2).encode())
  shutil.rmtree(out_dir, ignore_errors=True)
  os.replace(build, out_dir)
  return manifest


class Translator:
  """A trained generator with its face embedder: images -> one note (or melody) per face."""

  def __init__(self, config: ml_collections.ConfigDict, g_vars: dict[str, Any], source: str,
               manifest: dict[str, Any] | None = None):
    self.config = config
    self.source = source
    self.manifest = manifest or {}
    self.sample_rate = int(config.audio.sample_rate)
    self.pitch_range = (int(config.audio.pitch_min), int(config.audio.pitch_max))
    self._generator = g_lib.make_generator(config)
    self._g_vars = g_vars
    self._apply = jax.jit(lambda v, z, p: self._generator.apply(v, z, p, train=False))
    self._embedder = None

  @classmethod
  def load(cls, source: str | None = None, config: ml_collections.ConfigDict | None = None,
           step: int | None = None) -> 'Translator':
    """The shipped model (source None), an exported bundle, or a training work directory (with `config`, or the
    config training wrote there; its newest checkpoint, or that of `step`).

    Raises:
      BundleError: a bundle that is missing or altered (naming the file).
      checkpoint.CheckpointError, config_lib.ConfigError: a work directory without a usable checkpoint or config.
    """
    jax_cache.enable()
    directory = DEFAULT_BUNDLE if source is None else source
    if not os.path.isdir(directory):
      raise BundleError(f'No model at {directory}: expected a model bundle or a training work directory.')
    if source is None or os.path.isfile(os.path.join(directory, MANIFEST)):
      if config is not None:
        raise BundleError(f'{directory} is a model bundle, which carries its own config: a config is given only '
                          'with a training work directory.')
      if step is not None:
        raise BundleError(f'{directory} is a model bundle, which holds one model: a checkpoint step is given only '
                          'with a training work directory.')
      manifest, config, blob = read_bundle(directory)
      generator = g_lib.make_generator(config)
      template = jax.eval_shape(lambda: g_lib.init_variables(generator, config.data.embedding_dim, jax.random.key(0)))
      template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
      try:
        g_vars = flax.serialization.from_bytes(template, blob)
      except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f'{os.path.join(directory, GENERATOR)} does not hold this config\'s generator: {e}') from e
      return cls(config, jax.tree.map(jnp.asarray, g_vars), directory, manifest)
    from face2music_jax import gan, workdir as workdir_lib  # pylint: disable=import-outside-toplevel
    config = workdir_lib.run_config(directory, config)
    _, g_vars, step = gan.restore_generator(config, directory, step)
    return cls(config, gan.to_host(g_vars), directory, {'step': step})

  @property
  def embedder(self) -> face_embedding.Embedder:
    """The face embedder the model was trained with.

    Raises:
      BundleError: a bundle of a face network whose weights file (config.data.face_weights, recorded by path) is
        not the one it was trained with (the manifest's fingerprint).
    """
    if self._embedder is None:
      trained_with = self.manifest.get('face_embedder')  # Bundles exported before it was recorded: unchecked.
      if trained_with and trained_with != face_embedding.DlibFaceEmbedder.tag:
        found = face_embedding.embedder_tag(self.config)
        if found != trained_with:
          raise BundleError(
              f'{self.config.data.face_weights} (the face network weights of the model at {self.source}) is not '
              f'the file it was trained with (fingerprint {found.split(":")[-1]}; the model\'s is '
              f'{trained_with.split(":")[-1]}): put the weights it was trained with at that path.')
      self._embedder = face_embedding.make_embedder(self.config)
    return self._embedder

  def midi(self, pitch: int | str) -> int:
    """A MIDI number or a note name ('C4', 'F#3') -> a MIDI pitch within the model's range.

    Raises:
      ValueError: naming the pitch, if it is not a note or outside the model's range.
    """
    midi = melody_lib.to_midi(pitch)
    low, high = self.pitch_range
    if not low <= midi <= high:
      raise ValueError(f'Pitch {pitch!r} (MIDI {midi}) is outside the range this model was trained on: MIDI {low}..'
                       f'{high} ({melody_lib.note_name(low)}..{melody_lib.note_name(high)}).')
    return midi

  def faces(self, image: str | np.ndarray | Any, max_pixels: int = images_lib.MAX_PIXELS,
            max_faces: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every face of an image (a path, a PIL image or a uint8 [H, W, 3] array), left to right.

    Returns:
      (embeddings f(x) [K, E] float32, boxes [K, 4] int32 (left, top, right, bottom)).

    Raises:
      NoFaceError: naming the image, if the detector finds no face.
      face_embedding.TooManyFacesError: more than `max_faces` faces (found before any is embedded).
      images_lib.ImageError: a path that is not a readable image, or one larger than `max_pixels`.
    """
    pixels = to_rgb(image, max_pixels)
    try:
      return self.embedder.all_faces(pixels, max_faces)
    except face_embedding.NoFaceError as e:
      name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else 'the image'
      raise NoFaceError(f'No face found in {name}.') from e

  def generate(self, embeddings: np.ndarray, midi: Sequence[int] | np.ndarray) -> np.ndarray:
    """G(f(x), pitch) in eval mode: embeddings [N, E], MIDI pitches [N] (or one for every face) -> audio
    [N, length] float32. Note names: `midi` converts them.

    Raises:
      ValueError: embeddings of another shape or width than the model's faces, pitches that are not whole MIDI
        numbers one per face, or a pitch outside the model's range (its notes would be silence or NaN, not an
        error, inside G).
    """
    embeddings = np.asarray(embeddings, np.float32)
    midi = np.asarray(midi)
    width = self.config.data.embedding_dim
    if embeddings.ndim != 2 or embeddings.shape[1] != width:
      raise ValueError(f'Expected face embeddings of shape [N, {width}] for this model; got {embeddings.shape}.')
    if midi.ndim == 0:
      midi = np.full(len(embeddings), midi)
    if midi.shape != (len(embeddings),):
      raise ValueError(f'Expected one MIDI pitch per face ({len(embeddings)}); got pitches of shape {midi.shape}.')
    if not (np.issubdtype(midi.dtype, np.integer) or
            (np.issubdtype(midi.dtype, np.floating) and np.all(midi == np.round(midi)))):
      raise ValueError(f'Expected whole MIDI numbers; got {midi.tolist()[:4]} (note names: Translator.midi).')
    low, high = self.pitch_range
    outside = midi[(midi < low) | (midi > high)]
    if len(outside):
      raise ValueError(f'MIDI pitch {outside[0]:g} is outside the range this model was trained on: MIDI '
                       f'{low}..{high} ({melody_lib.note_name(low)}..{melody_lib.note_name(high)}).')
    classes = config_lib.pitch_class(self.config, midi.astype(np.int32))
    n = len(embeddings)
    if not n:
      return np.zeros((0, self.config.audio.length), np.float32)
    padded = -(-n // _PAD) * _PAD
    z = np.zeros((padded, embeddings.shape[1]), np.float32)
    z[:n] = embeddings
    p = np.zeros((padded,), np.int32)
    p[:n] = classes
    return np.asarray(self._apply(self._g_vars, z, p))[:n]

  def translate(self, image: str | np.ndarray | Any, pitch: int | str = 60, *,
                melody: str | Sequence[melody_lib.Note] | None = None,
                max_pixels: int = images_lib.MAX_PIXELS) -> list[FaceNote]:
    """Each face of an image, left to right, with its note at `pitch` or, given `melody`, its melody.

    Args:
      image: a path, a PIL image or a uint8 [H, W, 3] RGB array.
      pitch: MIDI number or note name.
      melody: note names ('C4 E4 G4:2 C5') or `melody.Note`s; each face plays all of it with its own sound.
      max_pixels: the largest image accepted.
    """
    embeddings, boxes = self.faces(image, max_pixels)
    boxes = [tuple(int(v) for v in b) for b in boxes]
    if melody is not None:
      return [FaceNote(box, self.render_melody(z, melody), self.sample_rate) for z, box in zip(embeddings, boxes)]
    midi = self.midi(pitch)
    audio = self.generate(embeddings, np.full(len(embeddings), midi))
    return [FaceNote(box, clip, self.sample_rate, midi) for clip, box in zip(audio, boxes)]

  def render_melody(self, embedding: np.ndarray, melody: str | Sequence[melody_lib.Note]) -> np.ndarray:
    """One face's melody: float32 [T] (audio/melody.py: each note generated at its pitch, held, released)."""
    notes = melody_lib.parse(melody) if isinstance(melody, str) else list(melody)
    if not notes:
      raise ValueError('The melody has no notes.')
    for note in notes:
      self.midi(note.midi)
    pitches = sorted({n.midi for n in notes})
    audio = self.generate(np.repeat(np.asarray(embedding, np.float32)[None], len(pitches), axis=0), pitches)
    return melody_lib.render(notes, dict(zip(pitches, audio)), self.sample_rate, self.config.audio.release_s)

  def write_wavs(self, image: str | os.PathLike | np.ndarray | Any, output_dir: str | os.PathLike,
                 pitch: int | str = 60, melody: str | Sequence[melody_lib.Note] | None = None) -> list[str]:
    """Writes `<stem>_face<k>.wav` for each face k of the image (left to right), replacing files of those names,
    and returns the paths (a path's stem, e.g. `group` for photos/group.jpg; an array or PIL image has the stem
    `image`)."""
    is_path = isinstance(image, (str, os.PathLike))
    stem = os.path.splitext(os.path.basename(os.fspath(image)))[0] if is_path else 'image'
    paths = []
    os.makedirs(output_dir, exist_ok=True)
    for k, face in enumerate(self.translate(image, pitch, melody=melody)):
      path = os.path.join(output_dir, f'{stem}_face{k}.wav')
      wav_lib.write_wav(path, face.audio, face.sample_rate)
      paths.append(path)
    return paths


def to_rgb(image: str | np.ndarray | Any, max_pixels: int = images_lib.MAX_PIXELS) -> np.ndarray:
  """A path, PIL image or array -> uint8 [H, W, 3] RGB (paths and PIL images: upright by EXIF, 16-bit scaled to 8;
  paths: size checked before decoding; arrays: uint16 or integers above 255 are 16-bit, floats within [0, 1] are
  [0, 1], other values are 0-255)."""
  if isinstance(image, (str, os.PathLike)):
    return images_lib.read_rgb(os.fspath(image), max_pixels)
  if hasattr(image, 'convert') and hasattr(image, 'size'):  # A PIL image: upright, 16 bits scaled, as from a path.
    return images_lib.rgb_pixels(image)
  array = np.asarray(image)
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  if array.ndim != 3 or array.shape[-1] not in (3, 4):
    raise ValueError(f'Expected an image [H, W, 3], got an array of shape {array.shape}.')
  if array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max() > 255):  # 16 bits a value.
    array = np.clip(np.asarray(array, np.float64) * (255.0 / 65535.0), 0, 255).round().astype(np.uint8)
  if array.dtype != np.uint8:
    array = np.clip(np.asarray(array, np.float64) * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round()
  return np.ascontiguousarray(array[..., :3].astype(np.uint8))
