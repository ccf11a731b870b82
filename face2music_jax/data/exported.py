r"""A run's data exported to one .npz file, read without TensorFlow, TFDS or dlib (e.g. on an accelerator machine
that has JAX and nothing else).

  # where the full install is: the notes and the face embeddings (and images) of a config's data
  face2music export_data --config=aux --out=/tmp/aux_small_data.npz
  # anywhere: train and evaluate from it, as from the data it was exported from
  face2music train --config=aux --config.data.exported=/tmp/aux_small_data.npz --workdir=/tmp/aux

`ExportedInputs` serves what `inputs.Inputs` serves (`notes`, `faces`, `faces_with_images`), so training, its
stages and evaluation read an exported file as they read TFDS notes and face TFRecords: the same arrays (notes
cropped as the models see them, float32; embeddings float32; images as uint8, decoded to the same [0, 1] floats).
A config reads a file only if the data fields it was exported with (`inputs.DATA_FIELDS`, but `data.exported`
and `data_dir`) are its own; each field that differs is named.

Contents: `notes/<split>/<key>` for the splits train, valid, test (audio, pitch, family, velocity, instrument);
`faces/<split>/<key>` for train and test (embedding, identity, name, filename, image); `data_fields` (JSON) and
`format`.
"""

import io
import json
import zipfile
import zlib
from typing import Any

import ml_collections
import numpy as np

from face2music_jax import config_lib

FORMAT = 1
NOTE_SPLITS = ('train', 'valid', 'test')
FACE_SPLITS = ('train', 'test')
# Fields of DATA_FIELDS that an exported file does not depend on.
_FREE_FIELDS = ('data_dir', 'data.exported')


class ExportError(ValueError):
  """An exported data file is missing, corrupt, or of other data than the config's; the message says which."""


def data_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The flattened fields that define an exported file's data (JSON values)."""
  from face2music_jax.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel  (inputs imports this)
  flat = {}

  def walk(node: Any, prefix: str) -> None:
    if isinstance(node, dict):
      for key, value in node.items():
        walk(value, f'{prefix}.{key}' if prefix else key)
    elif prefix not in _FREE_FIELDS:
      flat[prefix] = node

  loaded = json.loads(config.to_json_best_effort())
  for field in inputs_lib.DATA_FIELDS:
    walk(loaded[field], field)
  return flat


def export(config: ml_collections.ConfigDict, path: str, inputs: Any = None) -> str:
  """Writes the notes and faces of `config`'s data (read through `inputs`, an `inputs.Inputs`, or a new one) to
  `path` (.npz), atomically; returns the path."""
  from face2music_jax import files  # pylint: disable=import-outside-toplevel
  from face2music_jax.data import inputs as inputs_lib  # pylint: disable=import-outside-toplevel
  inputs = inputs_lib.for_config(config, inputs)
  arrays = {'format': np.asarray(FORMAT), 'data_fields': np.asarray(json.dumps(data_fields(config), sort_keys=True))}
  for split in NOTE_SPLITS:
    for key, value in inputs.notes(split).items():
      arrays[f'notes/{split}/{key}'] = value
  for split in FACE_SPLITS:
    faces = inputs.faces_with_images(split)
    for key, value in faces.items():
      if key == 'image':
        value = np.round(value * 255).astype(np.uint8)
      arrays[f'faces/{split}/{key}'] = value if value.dtype != object else value.astype(str)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)  # A sixth smaller (the notes' silences), for carrying to another machine.
  files.write_bytes(path, buffer.getvalue())
  return path


class ExportedInputs:
  """`inputs.Inputs` over an exported file (module docstring): every array read once, when first asked for."""

  def __init__(self, config: ml_collections.ConfigDict):
    """Opens `config.data.exported`.

    Raises:
      ExportError: the file is missing or corrupt, or was exported from other data (naming each field).
    """
    self.config = config.copy_and_resolve_references()
    self.path = config.data.exported
    try:
      self._file = np.load(self.path, allow_pickle=False)
      version = int(self._file['format'])
      exported = json.loads(str(self._file['data_fields']))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise ExportError(f'{self.path} (config.data.exported) is not a readable exported data file ({e}): export it '
                        'again with face2music export_data.') from e
    if version != FORMAT:
      raise ExportError(f'{self.path} has format {version}; this version reads {FORMAT}: export it again.')
    here = data_fields(config)
    # A field added after the file was exported has the value that reproduces the data of the version without it.
    exported = {**{k: v for k, v in config_lib.ADDED_FIELDS.items() if k in here and k not in exported}, **exported}
    differ = [
        f'config.{k} = {here.get(k)!r} here, {exported.get(k)!r} in the file' for k in sorted(here.keys() |
                                                                                              exported.keys())
        if json.dumps(here.get(k)) != json.dumps(exported.get(k))
    ]
    if differ:
      raise ExportError(
          f'{self.path} (config.data.exported) holds other data than this config\'s: {"; ".join(differ)}.')
    self._cache: dict[str, np.ndarray] = {}

  def serves(self, config: ml_collections.ConfigDict) -> bool:
    return config.data.exported == self.path and data_fields(config) == data_fields(self.config)

  def _arrays(self, prefix: str) -> dict[str, np.ndarray]:
    names = [n for n in self._file.files if n.startswith(prefix)]
    if not names:
      raise ExportError(f'{self.path} holds no {prefix.rstrip("/")}: export it again.')
    for name in names:
      if name not in self._cache:
        try:
          self._cache[name] = self._file[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
          raise ExportError(f'{self.path}: {name} is corrupt ({e}): export it again.') from e
    return {n[len(prefix):]: self._cache[n] for n in names}

  def notes(self, split: str) -> dict[str, np.ndarray]:
    return self._arrays(f'notes/{split}/')

  def face_files(self, split: str) -> list[str]:
    return [f'{self.path}:faces/{split}']

  def faces(self, split: str, *, process_index: int = 0, process_count: int = 1,
            max_examples: int | None = None) -> dict[str, np.ndarray]:
    """As `inputs.Inputs.faces`; hosts share the faces by example."""
    faces = {k: v for k, v in self._arrays(f'faces/{split}/').items() if k != 'image'}
    faces = {k: v[:max_examples][process_index::process_count] for k, v in faces.items()}
    return faces

  def faces_with_images(self, split: str) -> dict[str, np.ndarray]:
    faces = dict(self._arrays(f'faces/{split}/'))
    if 'image' not in faces:
      raise ExportError(f'{self.path} holds no face images: export it again.')
    faces['image'] = faces['image'].astype(np.float32) / 255
    return faces
