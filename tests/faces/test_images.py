"""Images as a person sees them: EXIF orientation applied, 16-bit modes scaled to 8 bits, size checked first."""

import numpy as np
import pytest
from PIL import Image

from face2music_jax.faces import images


def _picture() -> np.ndarray:
  """uint8 RGB [60, 80, 3]: a bright top-left corner, so that a turn or flip shows."""
  pixels = np.full((60, 80, 3), 40, np.uint8)
  pixels[:20, :30] = 220
  return pixels


@pytest.mark.parametrize('orientation, stored', [
    (3, lambda im: im.transpose(Image.Transpose.ROTATE_180)),
    (6, lambda im: im.transpose(Image.Transpose.ROTATE_90)),
    (8, lambda im: im.transpose(Image.Transpose.ROTATE_270)),
])
def test_the_exif_orientation_is_applied(tmp_path, orientation, stored):
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = str(tmp_path / 'photo.jpg')
  stored(Image.fromarray(_picture())).save(path, quality=98, exif=exif)
  pixels = images.read_rgb(path)
  assert pixels.shape == (60, 80, 3)
  assert np.abs(pixels.astype(float) - _picture()).mean() < 4


@pytest.mark.parametrize(
    'deep, name',
    [
        (lambda grey: Image.fromarray(grey.astype(np.uint16) * 257), 'deep.png'),  # 16-bit greyscale ('I;16')
        (lambda grey: Image.fromarray(grey.astype(np.int32) * 257, mode='I'), 'deep.tif'),  # 32-bit integer greyscale
    ])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, deep, name):
  grey = _picture()[..., 0]
  path = str(tmp_path / name)
  deep(grey).save(path)
  pixels = images.read_rgb(path)
  assert pixels.shape == (60, 80, 3) and pixels.dtype == np.uint8
  assert np.abs(pixels[..., 1].astype(float) - grey).max() <= 1


def test_the_apis_pil_images_and_arrays_read_as_their_files_do(tmp_path):
  """`Translator.translate` takes a path, a PIL image or an array: an opened file (turned by EXIF, 16 bits) and a
  16-bit array give the pixels its path gives."""
  from face2music_jax import translator  # pylint: disable=import-outside-toplevel  (JAX: only this test)
  exif = Image.Exif()
  exif[0x0112] = 6
  turned = str(tmp_path / 'turned.jpg')
  Image.fromarray(_picture()).transpose(Image.Transpose.ROTATE_90).save(turned, quality=98, exif=exif)
  deep = str(tmp_path / 'deep.png')
  Image.fromarray(_picture()[..., 0].astype(np.uint16) * 257).save(deep)
  for path in (turned, deep):
    with Image.open(path) as image:
      np.testing.assert_array_equal(translator.to_rgb(image), translator.to_rgb(path))
    assert translator.to_rgb(path).shape == (60, 80, 3)
  np.testing.assert_array_equal(translator.to_rgb(_picture().astype(np.uint16) * 257), _picture())
  np.testing.assert_array_equal(translator.to_rgb(_picture().astype(np.int64)), _picture())  # 0-255 in int64.
  np.testing.assert_array_equal(translator.to_rgb(_picture() / 255.0), _picture())


def test_a_too_large_image_is_refused_from_its_header(tmp_path):
  path = str(tmp_path / 'huge.png')
  Image.new('1', (9000, 9000)).save(path)  # 81 megapixels in a few kB, over the default limit of 80.
  with pytest.raises(images.ImageError, match='it is 9000x9000 pixels .* limit of 80 megapixels'):
    images.read_rgb(path)
  with pytest.raises(images.ImageError, match='it is 9000x9000 pixels'):  # Uploads (the live page) alike.
    images.decode_rgb(open(path, 'rb').read())
  small = str(tmp_path / 'small.png')
  Image.fromarray(_picture()).save(small)
  with pytest.raises(images.ImageError, match='limit of 0.001 megapixels'):
    images.read_rgb(small, max_pixels=1000)


def test_an_unreadable_image_is_an_image_error(tmp_path):
  path = tmp_path / 'broken.jpg'
  path.write_bytes(b'\xff\xd8 not really a JPEG')
  with pytest.raises(images.ImageError):
    images.read_rgb(str(path))
  with pytest.raises(images.ImageError):
    images.decode_rgb(b'hello')
