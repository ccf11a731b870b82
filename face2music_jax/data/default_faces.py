"""The embedded default faces: real LFW crops from scikit-image (and the astronaut), in augmented views, converted
into face records (`faces/records.py`) with the config's face embeddings, once per embedder.

`prepare_default_faces` builds them when missing (`stages.ensure_data` is the one caller that builds);
`built_face_files` only reads the index of built faces, and is what the reader (`faces.face_files`) calls.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import config_lib
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import records as face_records
from face2music_jax.faces.embedding import Embedder
from face2music_jax.faces.records import FaceDataError

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
  written as JPEG into a temporary `<identity>/<view>.jpg` tree and converted by `face_records.convert_folder`, as
  VGGFace2 is, with the embedder of `face_embedding.make_embedder(config)` (dlib's 128-d network, or the Flax
  network with config.data.face_weights) on the whole crops (they are tight and too small for the face detector).

  Returns:
    {'train': [...], 'test': [...]}: files under `default_faces_dir(config)`, a directory of their embedder.

  Raises:
    FaceDataError: naming the index `faces.json` of the built faces, if it is corrupt or names another embedder.
    config_lib.ConfigError: naming config.data.face_weights or embedding_dim, if the weights file is missing or
      unreadable or gives embeddings of another width.
  """
  if not is_built(config):
    _write_default_faces(default_faces_dir(config), config.data.face_views, config.data.max_default_faces,
                         face_embedding.make_embedder(config, assume_cropped=True))
  return built_face_files(config)


def is_built(config: ml_collections.ConfigDict) -> bool:
  """Whether the default faces of `config` are built (their index exists; `built_face_files` reads it)."""
  return tf.io.gfile.exists(os.path.join(default_faces_dir(config), 'faces.json'))


def built_face_files(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """The files per split of the default faces of `config`, as their index `faces.json` lists them; builds nothing.

  Raises:
    FaceDataError: naming the index, if it is missing (the faces are not built: `prepare_default_faces` builds
      them, and `stages.ensure_data` calls it), corrupt, or names another embedder.
    config_lib.ConfigError: naming config.data.face_weights, if it is missing.
  """
  root = default_faces_dir(config)
  manifest_path = os.path.join(root, 'faces.json')
  expected = face_embedding.embedder_tag(config)
  if not tf.io.gfile.exists(manifest_path):
    raise FaceDataError(f'The default faces are not built: {manifest_path} does not exist. stages.ensure_data '
                        '(run by run_train.py and run_eval.py) builds them.')
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
  partial `root` and processes preparing them at once (e.g. hosts sharing a disk) do not mix their files. An error
  or a stop (Ctrl-C, SIGTERM) removes that directory; only a killed process leaves it behind."""
  start = time.time()
  build = f'{root}.incomplete-{uuid.uuid4().hex}'
  logging.info('Preparing the default faces in %s.', root)
  try:
    manifest = _build_default_faces(build, num_views, limit, embedder)
    manifest['seconds'] = round(time.time() - start, 1)
    with tf.io.gfile.GFile(os.path.join(build, 'faces.json'), 'w') as f:
      json.dump(manifest, f, indent=2)
  except BaseException:
    if tf.io.gfile.exists(build):
      tf.io.gfile.rmtree(build)
    raise
  try:
    tf.io.gfile.rename(build, root)
  except tf.errors.OpError:
    if not tf.io.gfile.exists(os.path.join(root, 'faces.json')):
      raise
    tf.io.gfile.rmtree(build)  # Another process finished first; its files are the same.
  logging.info('Prepared the default faces (%s identities, %d views each) in %.1f s.', manifest['identities'],
               num_views,
               time.time() - start)


def _build_default_faces(build: str, num_views: int, limit: int, embedder: Embedder) -> dict[str, Any]:
  """Writes the default faces' shards into the directory `build`; returns their index (faces.json) to write."""
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
          Image.fromarray(pixels).save(os.path.join(tmp, split, name, f'{view:02d}.jpg'),
                                       quality=face_records.JPEG_QUALITY)
      paths = face_records.convert_folder(os.path.join(tmp, split), build, split, _DEFAULT_SHARDS[split],
                                          embedder=embedder)
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
  }
  if isinstance(embedder, face_embedding.FaceNetworkEmbedder):
    manifest['face_weights'] = embedder.weights
  return manifest
