"""Face embeddings f(x): the `Embedder` protocol, dlib's 128-d face-recognition ResNet, and a tool that adds them
to existing face TFRecords.

Any callable that maps uint8 images [N, H, W, 3] to float32 embeddings [N, D] and has a `.dim` attribute is an
`Embedder` and can be given to the converter (`faces.convert_folder`) or to `faces.add_embeddings`; dlib's network
(`DlibFaceEmbedder`, 128-d, ships offline) embeds the default faces, the Flax 512-d network of
`face2music_jax/models/face.py` embeds VGGFace2.

Measured on LFW crops (skimage.data.lfw_subset, 25x25 upscaled to 150x150): a face and its mirror image lie about
0.22 apart, two different people about 0.70 (dlib's own same-person threshold is 0.6).

Command line, to precompute embeddings into face TFRecords (for example your own images converted with
`python -m face2music_jax.data.faces convert`):

  python -m face2music_jax.data.face_embedding --input='/data/faces/train-*.tfrecord' \
      --output_dir=/data/faces_dlib [--assume_cropped] [--skip_no_face]
"""

import importlib.util
import os
from typing import Protocol

import dlib
import numpy as np
from absl import app
from absl.flags import argparse_flags
from PIL import Image


class Embedder(Protocol):
  """Maps face images to embeddings.

  Attributes:
    dim: width D of the embedding.
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


# dlib aligns every face to a 150x150 chip; the landmark predictor needs about as many pixels to place the eyes.
_CHIP_SIZE = 150
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


class DlibFaceEmbedder:
  """dlib's face-recognition ResNet (128-d, trained on about 3 million faces; LFW accuracy 99.38%).

  Each face is located (HOG detector, or the whole image with `assume_cropped`), its 5 landmarks are found, it is
  aligned to a 150x150 chip (`dlib.get_face_chip`) and embedded. Costs about 0.1-0.15 s per face on one core.

  Attributes:
    dim: 128.
    assume_cropped: treat each whole image as the face box instead of running the detector; for tight face crops
      too small for the detector, such as the 25x25 LFW crops of the embedded default faces.
    num_jitters: if > 0, average over this many randomly jittered copies of each chip (slower, slightly better).
  """

  dim = 128

  def __init__(self, assume_cropped: bool = False, num_jitters: int = 0):
    self.assume_cropped = assume_cropped
    self.num_jitters = num_jitters
    self._detector = dlib.get_frontal_face_detector()
    self._landmarks = dlib.shape_predictor(dlib_model_file('shape_predictor_5_face_landmarks.dat'))
    self._network = dlib.face_recognition_model_v1(dlib_model_file('dlib_face_recognition_resnet_model_v1.dat'))

  def _face_boxes(self, image: np.ndarray, index: int) -> list[dlib.rectangle]:
    height, width = image.shape[:2]
    if self.assume_cropped:
      return [dlib.rectangle(0, 0, width - 1, height - 1)]
    scale = min(1.0, (MAX_DETECTION_PIXELS / (height * width)) ** 0.5)
    seen = image
    if scale < 1:
      size = (max(1, round(width * scale)), max(1, round(height * scale)))
      seen = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    # Upsampling once more finds faces down to about 40 pixels, at 4x the cost, so it is only a second try.
    boxes = list(self._detector(seen, 0) or self._detector(seen, 1))
    if scale < 1:  # Back to the photo's pixels.
      boxes = [dlib.rectangle(round(b.left() / scale), round(b.top() / scale), round(b.right() / scale),
                              round(b.bottom() / scale)) for b in boxes]
    if not boxes:
      raise NoFaceError(f'No face found in image {index} ({height}x{width} pixels) by the HOG face detector; pass '
                        'assume_cropped=True if the images are tight face crops.', index)
    return boxes

  def _chip(self, image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
    landmarks = self._landmarks(image, box)
    return dlib.get_face_chip(image, landmarks, size=_CHIP_SIZE, padding=0.25)

  def _embed_chips(self, chips: np.ndarray) -> np.ndarray:
    if not len(chips):
      return np.zeros((0, self.dim), np.float32)
    descriptors = self._network.compute_face_descriptor(list(chips), self.num_jitters)
    return np.asarray([np.asarray(d) for d in descriptors], np.float32)

  @staticmethod
  def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f'Expected uint8 RGB images [N, H, W, 3], got {images.dtype} {images.shape}.')
    return images

  def face_chips(self, images: np.ndarray) -> np.ndarray:
    """Aligned faces, the largest of each image: uint8 [N, H, W, 3] -> uint8 [N, 150, 150, 3]. Raises NoFaceError
    in detection mode."""
    chips = []
    for index, image in enumerate(self._check_images(images)):
      image = _upscale(image, _CHIP_SIZE)
      chips.append(self._chip(image, max(self._face_boxes(image, index), key=lambda box: box.area())))
    return np.stack(chips) if chips else np.zeros((0, _CHIP_SIZE, _CHIP_SIZE, 3), np.uint8)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Embeds the largest face of each image: uint8 [N, H, W, 3] RGB -> float32 [N, 128]. Raises NoFaceError in
    detection mode."""
    return self._embed_chips(self.face_chips(images))

  def all_faces(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every face of one image, left to right (by the left edge of its box).

    Args:
      image: uint8 [H, W, 3] RGB.

    Returns:
      (embeddings float32 [K, 128], boxes int32 [K, 4]: each face's (left, top, right, bottom) in the image's
      pixels, as the detector placed it, right and bottom inclusive, clipped to the image).

    Raises:
      NoFaceError: the detector found no face (detection mode).
    """
    (image,) = self._check_images(np.asarray(image)[None])
    upscaled = _upscale(image, _CHIP_SIZE)
    boxes = sorted(self._face_boxes(upscaled, 0), key=lambda box: box.left())
    chips = np.stack([self._chip(upscaled, box) for box in boxes])
    # Boxes in the upscaled image -> the image's own pixels.
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height]) / np.array([upscaled.shape[1], upscaled.shape[0]] * 2)
    corners = np.array([[box.left(), box.top(), box.right(), box.bottom()] for box in boxes]) * scale
    corners = np.clip(np.round(corners), 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.int32)
    return self._embed_chips(chips), corners


def _parse_flags(argv: list[str]):
  parser = argparse_flags.ArgumentParser(description='Adds dlib face embeddings to face TFRecords.')
  parser.add_argument('--input', required=True, help="Glob of face TFRecords, e.g. '/data/faces/train-*.tfrecord'.")
  parser.add_argument('--output_dir', required=True, help='Where the files, with embeddings, are written.')
  parser.add_argument('--assume_cropped', action='store_true',
                      help='Images are tight face crops: skip face detection.')
  parser.add_argument('--skip_no_face', action='store_true',
                      help='Drop (and count) images without a detected face instead of failing.')
  parser.add_argument('--num_jitters', type=int, default=0)
  return parser.parse_args(argv[1:])


def main(args) -> None:
  # faces.py imports this module (for the Embedder protocol), so the command line imports it late.
  from face2music_jax.data import faces  # pylint: disable=g-import-not-at-top
  embedder = DlibFaceEmbedder(assume_cropped=args.assume_cropped, num_jitters=args.num_jitters)
  faces.add_embeddings(args.input, args.output_dir, embedder, skip_no_face=args.skip_no_face)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
