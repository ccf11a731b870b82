"""Image files as a person sees them: the size checked from the header before any pixel is decoded, the EXIF
orientation applied, and 16-bit and other modes converted to 8-bit RGB.

A photo's pixels are often stored sideways with an EXIF tag saying how to turn them; a 16-bit greyscale PNG
clipped to 8 bits is white; and a PNG of a few KB can decode to gigabytes. The face converter
(faces/records.py) and translation (translate.py) read images through these functions.
"""

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

# The default size limit: a 80-megapixel RGB image is 240 MB of pixels, and larger photos are rare.
MAX_PIXELS = 80_000_000
# What the EXIF orientation tag (0x0112) asks for, as PIL's transposes (ImageOps.exif_transpose's table).
_ORIENTATION_TAG = 0x0112
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90
}
_16_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')
# What a folder of photos is taken to hold (by file name; each file is still checked when it is read).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


class ImageError(ValueError):
  """An image cannot be read, or is too large; the message says why but not which file (the caller names it)."""


def open_checked(source: str | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
  """Opens an image lazily (its header only) and checks its size before any pixel is decoded.

  Args:
    source: a path or a binary file object.
    max_pixels: the most pixels (width x height) accepted.

  Raises:
    ImageError: not an image that PIL reads, or larger than `max_pixels`.
  """
  previous = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None  # PIL's own decompression-bomb check; the one below replaces it and says more.
  try:
    image = Image.open(source)
  except (OSError, UnidentifiedImageError) as e:
    raise ImageError(str(e)) from e
  finally:
    Image.MAX_IMAGE_PIXELS = previous
  width, height = image.size
  if width * height > max_pixels:
    image.close()
    raise ImageError(f'it is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the limit of '
                     f'{max_pixels / 1e6:g} megapixels; shrink it, or raise the limit (--max_image_pixels)')
  return image


def orientation_transpose(image: Image.Image) -> Image.Transpose | None:
  """The transpose that turns the stored pixels of `image` upright, from its EXIF orientation; None if none is
  needed."""
  return _TRANSPOSES.get(image.getexif().get(_ORIENTATION_TAG, 1))


def rgb_pixels(image: Image.Image) -> np.ndarray:
  """The pixels of an opened image, upright (EXIF orientation applied), as uint8 RGB [H, W, 3].

  16-bit images are scaled to 8 bits (PIL's own conversion clips them, which turns most of a photo white); float
  images are taken as [0, 1] when they lie within it, else as [0, 255]; alpha is dropped.

  Raises:
    ImageError: the pixels cannot be decoded (a truncated or corrupt file).
  """
  try:
    image = ImageOps.exif_transpose(image)
    if image.mode in _16_BIT_MODES or image.mode == 'I':
      pixels = np.asarray(image, np.float64)
      full_scale = 65535 if image.mode in _16_BIT_MODES or pixels.max() > 255 else 255
      image = Image.fromarray(np.clip(pixels * 255 / full_scale, 0, 255).round().astype(np.uint8))
    elif image.mode == 'F':
      pixels = np.asarray(image, np.float64)
      pixels = pixels * 255 if pixels.min() >= 0 and pixels.max() <= 1 else pixels
      image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return np.asarray(image.convert('RGB'))
  except (OSError, ValueError) as e:
    raise ImageError(str(e)) from e


def read_rgb(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """An image file as upright uint8 RGB [H, W, 3] (`open_checked`, then `rgb_pixels`); ImageError if it fails."""
  with open_checked(path, max_pixels) as image:
    return rgb_pixels(image)


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """Image bytes (an upload) as upright uint8 RGB [H, W, 3], checked as `read_rgb` checks a file."""
  with open_checked(io.BytesIO(data), max_pixels) as image:
    return rgb_pixels(image)


def image_files(directory: str) -> list[str]:
  """The image files of a folder (by IMAGE_EXTENSIONS; not recursive), sorted by name; [] when it holds none."""
  return sorted(
      os.path.join(directory, f)
      for f in os.listdir(directory)
      if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(directory, f)))
