"""Face embeddings f(x): the `Embedder` protocol, dlib's 128-d face-recognition ResNet, the Flax face network on
the same aligned faces, the choice between them from a config, and the flags that choose one on the face records'
command line (`records.py`).

Any callable that maps uint8 images [N, H, W, 3] to float32 embeddings [N, D] and has a `.dim` attribute is an
`Embedder` and can be given to the converter (`records.convert_folder`) or to `records.add_embeddings`.
Two are here, both on faces found and aligned by dlib (`FaceAligner`): dlib's network (`DlibFaceEmbedder`, 128-d,
ships offline) and the Flax Inception-ResNet-v1 of `face2music_jax/faces/network.py` (`FaceNetworkEmbedder`, 512-d
with the VGGFace2 weights). `make_embedder(config)` picks one from config.data.face_embedding and face_weights:
the default faces, the converter, the `embed` command and translation all embed with it. Each embedder has a `tag`
('dlib', or 'network:<fingerprint of the weights file>') that the records and the default faces' directory carry,
so that embeddings of one embedder are never read as another's (`data/faces.py: face_files` checks it).

Measured on LFW crops (skimage.data.lfw_subset, 25x25 upscaled to 150x150): a face and its mirror image lie about
0.22 apart, two different people about 0.70 (dlib's own same-person threshold is 0.6).

Embeddings are precomputed into face TFRecords with `python -m face2music_jax.faces.records embed` (or while
converting: `... faces.records convert --embed=...`); the flags that choose the embedder there are defined here
(`add_embedder_flags`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from typing import Protocol

import lazy_loader
import ml_collections
import numpy as np
from absl import app
from PIL import Image

from face2music_jax import config_lib
from face2music_jax.faces import network as face_network

dlib = lazy_loader.load('dlib')  # Imported when a face is first detected or embedded.


class Embedder(Protocol):
  """Maps face images to embeddings.

  Attributes:
    dim: width D of the embedding.
    tag: optional (the embedders here have one): names the embedder, and the weights of a network, in the records
      that hold its embeddings, so that embeddings of another embedder are not taken for its own.
  """

  dim: int

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """images: uint8 [N, H, W, 3] RGB -> float32 [N, D]."""


class NoFaceError(ValueError):
  """The face detector found no face in an image.

  Attributes:
    index: position of the image in the batch given to the embedder.
  """

  def __init__(self, message: str, index: int):
    super().__init__(message)
    self.index = index


class TooManyFacesError(ValueError):
  """An image holds more faces than the caller will embed (found before any is embedded).

  Attributes:
    count: the faces found.
    limit: the most the caller accepts.
  """

  def __init__(self, count: int, limit: int):
    super().__init__(f'{count} faces found; at most {limit} are translated at once.')
    self.count, self.limit = count, limit


# dlib aligns every face to a 150x150 chip; the landmark predictor needs about as many pixels to place the eyes.
_CHIP_SIZE = 150
# The Flax network's chips: its input size (the VGGFace2 weights were trained on 160x160 crops).
NETWORK_CHIP_SIZE = face_network.DEFAULT_IMAGE_SIZE
# The detector looks at a copy of a larger photo shrunk to this many pixels: its cost grows with the pixels (an
# 8000x8000 photo took 54 s and 3.8 GB), and a face that fills a useful part of a photo stays above its 40-80
# pixel minimum. Landmarks and chips are taken from the photo itself.
MAX_DETECTION_PIXELS = 4_000_000


def dlib_model_file(name: str) -> str:
  """Path of a model file shipped by the `face_recognition_models` package, e.g. 'shape_predictor_5_face_landmarks.dat'.

  The package's own `*_location()` helpers import `pkg_resources`, which setuptools >= 81 no longer provides, so
  the package directory is found without importing it.
  """
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError('dlib face embeddings need the face_recognition_models package: '
                      'pip install face_recognition_models==0.3.0')
  path = os.path.join(spec.submodule_search_locations[0], 'models', name)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing from the face_recognition_models package.')
  return path


def _upscale(image: np.ndarray, min_side: int) -> np.ndarray:
  """Bicubic upscaling so that the shorter side is at least `min_side` pixels; larger images are unchanged."""
  height, width = image.shape[:2]
  scale = min_side / min(height, width)
  if scale <= 1:
    return np.ascontiguousarray(image)
  size = (round(width * scale), round(height * scale))
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


class FaceAligner:
  """Finds faces and aligns each to a square chip by its 5 landmarks (dlib), for either embedder.

  Each face is located (HOG detector, or the whole image with `assume_cropped`), its 5 landmarks are found and it
  is turned upright and scaled to a `chip_size` square (`dlib.get_face_chip`). Images smaller than the chip are
  upscaled first.

  Attributes:
    assume_cropped: treat each whole image as the face box instead of running the detector; for tight face crops
      too small for the detector, such as the 25x25 LFW crops of the embedded default faces.
    chip_size: side of the aligned chips (pixels).
    padding: margin around the landmarks' face region, as a fraction of its side (dlib's default is 0.25).
  """

  def __init__(self, assume_cropped: bool = False, chip_size: int = _CHIP_SIZE, padding: float = 0.25):
    self.assume_cropped = assume_cropped
    self.chip_size = chip_size
    self.padding = padding
    self._detector = dlib.get_frontal_face_detector()
    self._landmarks = dlib.shape_predictor(dlib_model_file('shape_predictor_5_face_landmarks.dat'))

  def _face_boxes(self, image: np.ndarray, index: int) -> list[dlib.rectangle]:
    height, width = image.shape[:2]
    if self.assume_cropped:
      return [dlib.rectangle(0, 0, width - 1, height - 1)]
    scale = min(1.0, (MAX_DETECTION_PIXELS / (height * width))**0.5)
    seen = image
    if scale < 1:
      size = (max(1, round(width * scale)), max(1, round(height * scale)))
      seen = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    # Upsampling once more finds faces down to about 40 pixels, at 4x the cost, so it is only a second try.
    boxes = list(self._detector(seen, 0) or self._detector(seen, 1))
    if scale < 1:  # Back to the photo's pixels.
      boxes = [
          dlib.rectangle(round(b.left() / scale), round(b.top() / scale), round(b.right() / scale),
                         round(b.bottom() / scale)) for b in boxes
      ]
    if not boxes:
      raise NoFaceError(
          f'No face found in image {index} ({height}x{width} pixels) by the HOG face detector; pass '
          'assume_cropped=True if the images are tight face crops.', index)
    return boxes

  def _chip(self, image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
    landmarks = self._landmarks(image, box)
    return dlib.get_face_chip(image, landmarks, size=self.chip_size, padding=self.padding)

  def face_chips(self, images: np.ndarray) -> np.ndarray:
    """Aligned faces, the largest of each image: uint8 [N, H, W, 3] -> uint8 [N, chip_size, chip_size, 3]. Raises
    NoFaceError in detection mode."""
    chips = []
    for index, image in enumerate(_check_images(images)):
      image = _upscale(image, self.chip_size)
      chips.append(self._chip(image, max(self._face_boxes(image, index), key=lambda box: box.area())))
    return np.stack(chips) if chips else np.zeros((0, self.chip_size, self.chip_size, 3), np.uint8)

  def all_face_chips(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every face of one image, left to right (by the left edge of its box).

    Args:
      image: uint8 [H, W, 3] RGB.

    Returns:
      (chips uint8 [K, chip_size, chip_size, 3], boxes int32 [K, 4]: each face's (left, top, right, bottom) in the
      image's pixels, as the detector placed it, right and bottom inclusive, clipped to the image).

    Raises:
      NoFaceError: the detector found no face (detection mode).
    """
    (image,) = _check_images(np.asarray(image)[None])
    upscaled = _upscale(image, self.chip_size)
    boxes = sorted(self._face_boxes(upscaled, 0), key=lambda box: box.left())
    chips = np.stack([self._chip(upscaled, box) for box in boxes])
    # Boxes in the upscaled image -> the image's own pixels.
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height]) / np.array([upscaled.shape[1], upscaled.shape[0]] * 2)
    corners = np.array([[box.left(), box.top(), box.right(), box.bottom()] for box in boxes]) * scale
    corners = np.clip(np.round(corners), 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.int32)
    return chips, corners


def _check_images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f'Expected uint8 RGB images [N, H, W, 3], got {images.dtype} {images.shape}.')
  return images


class _AlignedEmbedder:
  """An embedder of aligned face chips: `FaceAligner` first, then `_embed_chips`.

  Attributes:
    dim: width D of the embedding.
    tag: names the embedder (and its weights) in the records and directories that hold its embeddings.
  """

  dim: int
  tag: str

  def __init__(self, aligner: FaceAligner):
    self._aligner = aligner

  @property
  def assume_cropped(self) -> bool:
    return self._aligner.assume_cropped

  def _embed_chips(self, chips: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def face_chips(self, images: np.ndarray) -> np.ndarray:
    """Aligned faces, the largest of each image (`FaceAligner.face_chips`)."""
    return self._aligner.face_chips(images)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Embeds the largest face of each image: uint8 [N, H, W, 3] RGB -> float32 [N, dim]. Raises NoFaceError in
    detection mode."""
    return self._embed_chips(self.face_chips(images))

  def all_faces(self, image: np.ndarray, max_faces: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every face of one image, left to right: (embeddings float32 [K, dim], boxes int32 [K, 4]) (boxes as
    `FaceAligner.all_face_chips`); NoFaceError if the detector finds none (detection mode), TooManyFacesError
    before any face is embedded if it finds more than `max_faces`."""
    chips, boxes = self._aligner.all_face_chips(image)
    if max_faces is not None and len(boxes) > max_faces:
      raise TooManyFacesError(len(boxes), max_faces)
    return self._embed_chips(chips), boxes


class DlibFaceEmbedder(_AlignedEmbedder):
  """dlib's face-recognition ResNet (128-d, trained on about 3 million faces; LFW accuracy 99.38%).

  Faces are aligned to 150x150 chips (`FaceAligner`) and embedded. Costs about 0.1-0.15 s per face on one core.

  Attributes:
    dim: 128.
    tag: 'dlib'.
    assume_cropped: treat each whole image as the face box instead of running the detector (`FaceAligner`).
    num_jitters: if > 0, average over this many randomly jittered copies of each chip (slower, slightly better).
  """

  dim = 128
  tag = 'dlib'

  def __init__(self, assume_cropped: bool = False, num_jitters: int = 0):
    super().__init__(FaceAligner(assume_cropped, _CHIP_SIZE))
    self.num_jitters = num_jitters
    self._network = dlib.face_recognition_model_v1(dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))

  def _embed_chips(self, chips: np.ndarray) -> np.ndarray:
    if not len(chips):
      return np.zeros((0, self.dim), np.float32)
    descriptors = self._network.compute_face_descriptor(list(chips), self.num_jitters)
    return np.asarray([np.asarray(d) for d in descriptors], np.float32)


def face_weights_fingerprint(path: str) -> str:
  """The first 16 hex digits of the SHA-256 of a weights file's bytes (cached while its size and time stay).

  Raises:
    FileNotFoundError: naming the file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Face network weights file not found: {path}')
  stat = os.stat(path)
  return _fingerprint(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # Part of the cache key only.
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(1 << 20):
      digest.update(block)
  return digest.hexdigest()[:16]


def network_tag(weights: str) -> str:
  """The tag of the face network with these weights: 'network:<fingerprint of the weights file>'."""
  return f'network:{face_weights_fingerprint(weights)}'


class FaceNetworkEmbedder(_AlignedEmbedder):
  """The Flax Inception-ResNet-v1 of `faces/network.py` (512-d with the VGGFace2 weights) on dlib-aligned chips.

  Faces are found and aligned as for dlib's network (`FaceAligner`), to 160x160 chips, the network's input size,
  so that the faces of the face data, of refinement (`python -m face2music_jax.faces.convert refine`) and of
  translation are all framed alike. The network runs in eval mode.

  Attributes:
    dim: the network's embedding width (512 for the VGGFace2 weights).
    tag: 'network:<the first 16 hex digits of the SHA-256 of the weights file>'.
    weights: the weights file.
  """

  def __init__(self, weights: str, assume_cropped: bool = False, batch_size: int = 32):
    """Loads the network.

    Args:
      weights: a weights file (format in `faces/network.py`).
      assume_cropped: treat each whole image as the face box (`FaceAligner`).
      batch_size: chips per forward pass.

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file, if it is not a readable weights file of the network.
    """
    super().__init__(FaceAligner(assume_cropped, NETWORK_CHIP_SIZE))
    self.weights = weights
    self.tag = network_tag(weights)
    self._network = face_network.CropEmbedder(weights, image_size=NETWORK_CHIP_SIZE, batch_size=batch_size)
    self.dim = self._network.dim

  def _embed_chips(self, chips: np.ndarray) -> np.ndarray:
    return self._network(chips)


def embedder_for(kind: str, face_weights: str = '', *, assume_cropped: bool = False, num_jitters: int = 0) -> Embedder:
  """The embedder of a kind: 'dlib' (`DlibFaceEmbedder`) or 'network' (`FaceNetworkEmbedder` with `face_weights`).

  Raises:
    ValueError: an unknown kind, or 'network' without weights.
    FileNotFoundError, ValueError: from loading the weights, naming the file.
  """
  if kind == 'dlib':
    return DlibFaceEmbedder(assume_cropped=assume_cropped, num_jitters=num_jitters)
  if kind == 'network':
    if not face_weights:
      raise ValueError("The 'network' face embedding needs a weights file (.npz; format in faces/network.py).")
    return FaceNetworkEmbedder(face_weights, assume_cropped=assume_cropped)
  raise ValueError(f'Unknown face embedding {kind!r}: expected one of {config_lib.FACE_EMBEDDINGS}.')


def embedder_tag(config: ml_collections.ConfigDict) -> str:
  """The tag of the embedder of `config` (see `make_embedder`), without loading it: 'dlib' or
  'network:<fingerprint>'.

  Raises:
    config_lib.ConfigError: naming config.data.face_weights, if the file is missing.
  """
  if config.data.face_embedding != 'network':
    return DlibFaceEmbedder.tag
  try:
    return network_tag(config.data.face_weights)
  except FileNotFoundError as e:
    raise config_lib.ConfigError(f'config.data.face_weights = {config.data.face_weights!r}: {e}') from e


def make_embedder(config: ml_collections.ConfigDict, *, assume_cropped: bool = False) -> Embedder:
  """The face embedder of `config`, the one that every path uses (default faces, translation): dlib's network for
  config.data.face_embedding == 'dlib', the Flax network with config.data.face_weights for 'network'.

  Args:
    config: the config.
    assume_cropped: the images are tight face crops: skip face detection (`FaceAligner`).

  Raises:
    config_lib.ConfigError: naming config.data.face_weights if the weights file is missing or unreadable, or
      config.data.embedding_dim if the embedder gives embeddings of another width.
  """
  kind, weights = config.data.face_embedding, config.data.face_weights
  try:
    embedder = embedder_for(kind, weights, assume_cropped=assume_cropped)
  except (FileNotFoundError, ValueError) as e:
    raise config_lib.ConfigError(f'config.data.face_weights = {weights!r} (face_embedding={kind!r}): {e}') from e
  if embedder.dim != config.data.embedding_dim:
    raise config_lib.ConfigError(f'config.data.embedding_dim = {config.data.embedding_dim} is invalid: the '
                                 f'{kind!r} face embedding gives {embedder.dim}-d embeddings.')
  return embedder


def add_embedder_flags(parser, choices: tuple[str, ...] = config_lib.FACE_EMBEDDINGS, default: str = 'dlib') -> None:
  """--embed and --face_weights, as config.data.face_embedding and config.data.face_weights."""
  parser.add_argument(
      '--embed', choices=choices, default=default,
      help="The face embedding (as config.data.face_embedding): 'dlib' (128-d) or 'network' (the "
      'Flax network of faces/network.py with --face_weights).')
  parser.add_argument('--face_weights', default='',
                      help='With --embed=network: its weights file (.npz, as config.data.face_weights).')


def check_embedder_flags(parser, args) -> None:
  """A parser error unless --face_weights is given exactly with --embed=network."""
  if args.embed == 'network' and not args.face_weights:
    parser.error('--embed=network needs --face_weights=<weights .npz>.')
  if args.embed != 'network' and args.face_weights:
    parser.error(f'--face_weights is only used with --embed=network, not --embed={args.embed}.')


def embedder_from_flags(args, num_jitters: int = 0) -> Embedder | None:
  """The embedder of --embed and --face_weights (None for --embed=none); app.UsageError naming a weights file that
  is missing or unreadable."""
  if args.embed == 'none':
    return None
  try:
    return embedder_for(args.embed, args.face_weights, assume_cropped=args.assume_cropped, num_jitters=num_jitters)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f'--face_weights={args.face_weights}: {e}') from e
