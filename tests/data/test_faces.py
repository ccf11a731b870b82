"""Tests of the face TFRecords (format, converter, reader, default faces) and of dlib's face embedding, on real LFW
faces from scikit-image."""

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data as skimage_data

from face2music_jax.configs import default
from face2music_jax.data import default_faces, faces
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import records as face_records
from face2music_jax.faces.embedding import DlibFaceEmbedder, NoFaceError
from face2music_jax.faces.records import FaceDataError

# Created out of order: labels must follow the sorted names, not the creation order.
IDENTITIES = ('n000010', 'n000002', 'n000007', 'n000003')
IMAGES_PER_IDENTITY = 3
NUM_IMAGES = len(IDENTITIES) * IMAGES_PER_IDENTITY


class BandMeans:
  """A stand-in embedder (any `Embedder` plugs into the converter): mean brightness of `dim` horizontal bands."""

  dim = 6

  def __call__(self, images: np.ndarray) -> np.ndarray:
    bands = np.array_split(np.asarray(images, np.float32), self.dim, axis=1)
    return np.stack([band.mean(axis=(1, 2, 3)) for band in bands], axis=1) / 255


@pytest.fixture(scope='module')
def lfw() -> np.ndarray:
  """The 100 real LFW face crops of scikit-image, uint8 [100, 25, 25]."""
  return (skimage_data.lfw_subset()[:100] * 255).round().astype(np.uint8)


def rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images[..., None], 3, axis=-1)


def write_folder(root: str, images: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
  """Writes a VGGFace2-style tree of JPEGs; returns '<identity>/<image>.jpg' -> the pixels written."""
  written = {}
  for identity, pixels in images.items():
    os.makedirs(os.path.join(root, identity), exist_ok=True)
    for i, image in enumerate(pixels):
      filename = f'{identity}/{i:04d}_01.jpg'
      Image.fromarray(image).save(os.path.join(root, filename), quality=95)
      written[filename] = image
  return written


@pytest.fixture(scope='module')
def folder(tmp_path_factory, lfw) -> tuple[str, dict[str, np.ndarray]]:
  root = str(tmp_path_factory.mktemp('vggface2') / 'train')
  images = {name: list(lfw[i * IMAGES_PER_IDENTITY:(i + 1) * IMAGES_PER_IDENTITY]) for i, name in enumerate(IDENTITIES)}
  return root, write_folder(root, images)


@pytest.fixture(scope='module')
def shards(folder, tmp_path_factory) -> list[str]:
  return face_records.convert_folder(folder[0], str(tmp_path_factory.mktemp('tfrecords')), 'train', num_shards=3)


def test_round_trip_keeps_images_identities_and_file_order(folder, shards):
  _, written = folder
  assert [os.path.basename(p) for p in shards] == [f'train-0000{i}-of-00003.tfrecord' for i in range(3)]
  out = faces.load_faces(shards, image_size=25)
  assert out['image'].shape == (NUM_IMAGES, 25, 25, 3) and out['image'].dtype == np.float32
  assert out['identity'].dtype == np.int32
  assert sorted(out['filename']) == sorted(written)
  labels = {name: label for label, name in enumerate(sorted(IDENTITIES))}
  for filename, name, label, image in zip(out['filename'], out['name'], out['identity'], out['image']):
    assert name == filename.split('/')[0] and label == labels[name]
    np.testing.assert_array_equal(image[..., 0], image[..., 2])  # Greyscale -> 3 equal channels.
    assert np.abs(image[..., 0] * 255 - written[filename]).mean() < 3.0  # Only JPEG's loss (other faces differ by ~40).
  in_file_order = [
      e.features.feature[face_records.FILENAME_KEY].bytes_list.value[0].decode()
      for path in shards
      for e in face_records.read_records(path)
  ]
  assert list(out['filename']) == in_file_order
  assert faces.stored_embedding_dim(shards) == 0 and 'embedding' not in out


def test_records_load_without_decoding_an_image(shards, monkeypatch):
  with_images = faces.load_faces(shards, image_size=16)
  monkeypatch.setattr(faces.tf.io, 'decode_jpeg', None)  # Any decoding would fail.
  without = faces.load_faces(shards, image_size=None)
  assert set(without) == {'identity', 'name', 'filename'}
  for key in without:
    np.testing.assert_array_equal(without[key], with_images[key])
  first = faces.load_faces(shards, image_size=None, max_examples=5)
  assert list(first['filename']) == list(without['filename'][:5])


def test_two_hosts_read_disjoint_files_covering_everything(shards):
  assignments = [faces.host_files(shards, i, 2) for i in range(2)]
  assert not set(assignments[0]) & set(assignments[1]) and sorted(sum(assignments, [])) == shards
  per_host = [set(faces.load_faces(files, image_size=None)['filename']) for files in assignments]
  assert not per_host[0] & per_host[1]
  assert len(per_host[0] | per_host[1]) == NUM_IMAGES
  with pytest.raises(FaceDataError, match='3 face TFRecord files .* 4 hosts'):
    faces.host_files(shards, 0, 4)


def test_embeddings_from_any_embedder_are_stored_and_checked(folder, shards, tmp_path):
  root, written = folder
  embedder = BandMeans()
  converted = face_records.convert_folder(root, str(tmp_path / 'embedded'), 'train', num_shards=2, embedder=embedder)
  out = faces.load_faces(converted, image_size=25, embedding_dim=embedder.dim)
  assert out['embedding'].shape == (NUM_IMAGES, embedder.dim) and out['embedding'].dtype == np.float32
  for filename, embedding in zip(out['filename'], out['embedding']):
    _, pixels = face_records.read_image(os.path.join(root, filename))
    np.testing.assert_allclose(embedding, embedder(pixels[None])[0], rtol=1e-6)

  without_images = faces.load_faces(converted, image_size=None)
  np.testing.assert_array_equal(without_images['embedding'], out['embedding'])
  with pytest.raises(FaceDataError, match=f'{converted[0]}.*width 6; expected width 128'):
    faces.load_faces(converted, image_size=None, embedding_dim=128)
  with pytest.raises(FaceDataError, match=f'{shards[0]}.*no embeddings; expected width 6'):
    faces.load_faces(shards, image_size=8, embedding_dim=6)

  added = face_records.add_embeddings(shards, str(tmp_path / 'added'), embedder)
  assert [os.path.basename(p) for p in added] == [os.path.basename(p) for p in shards]
  with_embeddings = faces.load_faces(added, image_size=25, embedding_dim=embedder.dim)
  np.testing.assert_array_equal(with_embeddings['filename'], faces.load_faces(shards, image_size=25)['filename'])
  with pytest.raises(FaceDataError, match='would overwrite its input'):
    face_records.add_embeddings(added, str(tmp_path / 'added'), embedder)


def test_mixed_widths_fail_while_reading(folder, tmp_path):
  """A file whose embeddings have another width than the first file's fails naming the file and the image."""
  good = face_records.convert_folder(folder[0], str(tmp_path / 'a'), 'train', num_shards=1, embedder=BandMeans())[0]
  narrow = BandMeans()
  narrow.dim = 3
  bad = face_records.convert_folder(folder[0], str(tmp_path / 'b'), 'test', num_shards=1, embedder=narrow)[0]
  with pytest.raises(FaceDataError, match=f'{bad}: the record of n0000.*width 3, not 6'):
    faces.load_faces([good, bad], image_size=8)


def test_dlib_mirror_closer_than_different_people(lfw):
  embedder = DlibFaceEmbedder(assume_cropped=True)
  people = rgb(lfw[:4])
  embeddings = embedder(np.concatenate([people, people[:, :, ::-1]]))
  assert embeddings.shape == (8, 128) and embeddings.dtype == np.float32 and embedder.dim == 128
  mirror = np.linalg.norm(embeddings[:4] - embeddings[4:], axis=1)
  different = np.linalg.norm(embeddings[:4, None] - embeddings[None, :4], axis=-1)[np.triu_indices(4, 1)]
  assert mirror.max() < different.min(), (mirror, different)
  assert mirror.mean() < 0.4 and different.mean() > 0.5, (mirror, different)  # dlib's threshold is 0.6.


def test_dlib_detection_finds_the_astronaut_and_no_face_in_grey(tmp_path):
  embedder = DlibFaceEmbedder()
  astronaut = skimage_data.astronaut()
  embeddings = embedder(np.stack([astronaut, astronaut[:, ::-1]]))
  assert embeddings.shape == (2, 128) and np.linalg.norm(embeddings[0] - embeddings[1]) < 0.4
  with pytest.raises(NoFaceError, match='No face found in image 1'):
    embedder(np.stack([astronaut[:300, :300], np.full((300, 300, 3), 128, np.uint8)]))

  root = str(tmp_path / 'faces')
  write_folder(root, {'n1': [astronaut[:300, 100:400]], 'n2': [np.full((64, 64, 3), 128, np.uint8)]})
  with pytest.raises(NoFaceError, match='n2/0000_01.jpg'):
    face_records.convert_folder(root, str(tmp_path / 'out'), 'train', num_shards=1, embedder=embedder)
  converted = face_records.convert_folder(root, str(tmp_path / 'out'), 'train', num_shards=1, embedder=embedder,
                                          skip_bad_images=True, overwrite=True)
  assert list(faces.load_faces(converted, image_size=32)['name']) == ['n1']


@pytest.mark.slow
def test_default_faces(tmp_path, monkeypatch):
  # dlib embeds about 5-10 faces/s on a busy core: 20 LFW faces (+ the astronaut) instead of 100 keep the test fast.
  monkeypatch.setattr(default_faces, '_NUM_LFW_FACES', 20)
  config = default.get_config('tiny')
  config.data_dir = str(tmp_path)
  config.data.max_default_faces = 0  # All identities (here the 20 LFW faces and the astronaut).
  assert config.data.face_views == 2
  # The reader only reads: unbuilt faces are an error naming the index that is missing, and nothing is built.
  with pytest.raises(FaceDataError, match=r'default faces are not built: .*faces\.json does not exist.*ensure_data'):
    faces.face_files(config, 'train')
  assert not os.path.exists(os.path.join(str(tmp_path), 'faces'))
  files = default_faces.prepare_default_faces(config)
  assert sorted(files) == ['test', 'train']
  assert os.path.dirname(files['train'][0]) == os.path.join(str(tmp_path), 'faces', 'lfw_subset_f2_v2')
  loaded = {split: faces.load_faces(paths, image_size=32, embedding_dim=128) for split, paths in files.items()}
  names = {split: set(out['name']) for split, out in loaded.items()}
  all_names = sorted(['astronaut'] + [f'lfw_{i:03d}' for i in range(20)])
  assert names['test'] == set(all_names[9::10]) and names['train'] == set(all_names) - names['test']
  for out in loaded.values():
    assert len(out['name']) == 2 * len(set(out['name']))  # face_views views of every identity.
    assert out['embedding'].shape == (len(out['name']), 128)
  # View 1 mirrors view 0 (with a crop and a brightness change): the same person for dlib.
  train = loaded['train']
  view = np.array([int(os.path.basename(f)[:2]) for f in train['filename']])
  by_name = {n: train['embedding'][(train['name'] == n) & (view == 0)][0] for n in names['train']}
  same = [np.linalg.norm(by_name[n] - e) for n, e in zip(train['name'][view == 1], train['embedding'][view == 1])]
  others = np.stack(list(by_name.values()))
  different = np.linalg.norm(others[:, None] - others[None], axis=-1)[np.triu_indices(len(others), 1)]
  assert np.mean(same) < 0.4 < 0.5 < np.mean(different), (np.mean(same), np.mean(different))

  mtime = os.path.getmtime(files['train'][0])
  start = time.time()
  assert default_faces.prepare_default_faces(config) == files  # Idempotent: the second call only reads the manifest.
  assert time.time() - start < 1 and os.path.getmtime(files['train'][0]) == mtime
  assert faces.face_files(config, 'test') == files['test']

  # A corrupt index is named, with the way out; it is not rebuilt over nor read as an empty set.
  manifest = os.path.join(os.path.dirname(files['train'][0]), 'faces.json')
  with open(manifest, 'r+') as f:
    f.truncate(os.path.getsize(manifest) // 2)
  with pytest.raises(FaceDataError, match=f'{manifest}, the index of the default faces, is corrupt.*delete'):
    default_faces.prepare_default_faces(config)


def test_face_files_from_a_split_glob(shards):
  config = default.get_config('tiny')
  config.data.face_source = 'tfrecords'
  config.data.face_tfrecords = os.path.join(os.path.dirname(shards[0]), '{split}-*.tfrecord')
  assert faces.face_files(config, 'train') == shards
  with pytest.raises(FaceDataError, match='test-\\*.tfrecord'):
    faces.face_files(config, 'test')
  config.data.face_tfrecords = os.path.join(os.path.dirname(shards[0]), 'train-*.tfrecord')
  with pytest.raises(FaceDataError, match='placeholder'):
    faces.face_files(config, 'train')


def test_image_that_does_not_decode(folder, tmp_path, caplog):
  root = str(tmp_path / 'faces')
  shutil.copytree(folder[0], root)
  with open(os.path.join(root, 'n000003', 'broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8 not really a JPEG')
  with pytest.raises(FaceDataError, match='Cannot decode image .*n000003/broken.jpg'):
    face_records.convert_folder(root, str(tmp_path / 'out'), 'train', num_shards=2)
  with caplog.at_level(logging.WARNING):
    converted = face_records.convert_folder(root, str(tmp_path / 'out'), 'train', num_shards=2, skip_bad_images=True,
                                            overwrite=True)
  assert 'Skipped 1 of 13 images' in caplog.text
  assert len(faces.load_faces(converted, image_size=8)['identity']) == NUM_IMAGES


@pytest.mark.parametrize('damage', ['truncate', 'flip_byte'])
def test_corrupt_tfrecord_names_the_file(shards, tmp_path, damage):
  copies = [shutil.copy(p, tmp_path) for p in shards]
  with open(copies[1], 'rb') as f:
    raw = bytearray(f.read())
  if damage == 'truncate':
    raw = raw[:-40]
  else:
    raw[len(raw) // 2] ^= 0xFF
  with open(copies[1], 'wb') as f:
    f.write(raw)
  for image_size in (8, None):
    with pytest.raises(FaceDataError, match=f'{copies[1]} is corrupt or truncated'):
      faces.load_faces(copies, image_size=image_size)
  with pytest.raises(FaceDataError, match=f'{copies[1]} is corrupt or truncated'):
    face_records.add_embeddings(copies, str(tmp_path / 'embedded'), BandMeans())


def test_missing_inputs_name_the_path(tmp_path, folder, shards):
  with pytest.raises(FaceDataError, match=f'{tmp_path}/nowhere does not exist'):
    face_records.convert_folder(str(tmp_path / 'nowhere'), str(tmp_path / 'out'), 'train', num_shards=1)
  (tmp_path / 'empty' / 'n000001').mkdir(parents=True)
  with pytest.raises(FaceDataError, match=f'No images .* found in {tmp_path}/empty'):
    face_records.convert_folder(str(tmp_path / 'empty'), str(tmp_path / 'out'), 'train', num_shards=1)
  for pattern, message in [(f'{tmp_path}/empty/*.tfrecord', 'No face TFRecord files match'),
                           (f'{tmp_path}/nowhere/*.tfrecord', 'nowhere does not exist'),
                           (str(tmp_path / 'empty'), 'is a directory')]:
    with pytest.raises(FaceDataError, match=message):
      faces.load_faces(pattern, image_size=8)
  with pytest.raises(FaceDataError, match=f'{tmp_path}/gone.tfrecord does not exist'):
    faces.load_faces([shards[0], str(tmp_path / 'gone.tfrecord')], image_size=8)
  with pytest.raises(FaceDataError, match='already holds 3 .train. shards'):
    face_records.convert_folder(folder[0], os.path.dirname(shards[0]), 'train', num_shards=1)


@pytest.mark.slow
def test_command_lines(folder, tmp_path):
  args = face_records._parse_flags([
      'face_records', 'convert', f'--input_dir={folder[0]}', f'--output_dir={tmp_path}/tfr', '--num_shards=2',
      '--embed=dlib', '--assume_cropped'
  ])
  face_records.main(args)
  converted = sorted(tf.io.gfile.glob(f'{tmp_path}/tfr/train-*-of-00002.tfrecord'))
  assert len(converted) == 2 and faces.stored_embedding_dim(converted) == 128

  plain = face_records.convert_folder(folder[0], str(tmp_path / 'plain'), 'train', num_shards=1)
  face_records.main(
      face_records._parse_flags(
          ['face_records', 'embed', f'--input={plain[0]}', f'--output_dir={tmp_path}/dlib', '--assume_cropped']))
  embedded = faces.load_faces([f'{tmp_path}/dlib/{os.path.basename(plain[0])}'], image_size=8, embedding_dim=128)
  assert embedded['embedding'].shape == (NUM_IMAGES, 128)


def _cut_at_the_last_record(path: str) -> None:
  """Truncates a TFRecord file at the boundary before its last record: every byte left is a whole record."""
  lengths = [len(r) + 16 for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]  # 16 bytes of framing each.
  os.truncate(path, sum(lengths[:-1]))


@pytest.mark.parametrize('damage', ['last_record_cut', 'emptied', 'deleted'])
def test_a_shard_that_lost_whole_records_is_an_error_naming_it(shards, tmp_path, damage):
  directory = str(tmp_path / 'copy')
  shutil.copytree(os.path.dirname(shards[0]), directory)
  with open(face_records.shard_lengths_path(directory, 'train')) as f:
    assert json.load(f)['shard_lengths'] == {os.path.basename(p): 4 for p in shards}
  copies = [os.path.join(directory, os.path.basename(p)) for p in shards]
  damaged = copies[1]
  if damage == 'deleted':
    os.remove(damaged)
    with pytest.raises(FaceDataError, match=f'{damaged} is missing: .*train.shard_lengths.json lists it'):
      face_records.resolve_files(os.path.join(directory, 'train-*.tfrecord'))
    return
  if damage == 'last_record_cut':
    _cut_at_the_last_record(damaged)
    message = f'{damaged} holds 3 records, but its writer recorded 4'
  else:
    open(damaged, 'w').close()
    message = f'{damaged} holds 0 records, but its writer recorded 4'
  for image_size in (8, None):
    with pytest.raises(FaceDataError, match=message):
      faces.load_faces(copies, image_size=image_size)
  with pytest.raises(FaceDataError, match=message):
    face_records.add_embeddings(copies, str(tmp_path / 'embedded'), BandMeans())


def _photo(lfw: np.ndarray) -> np.ndarray:
  """A real face, enlarged, as uint8 RGB [100, 100, 3]."""
  return np.asarray(Image.fromarray(rgb(lfw[:1])[0]).resize((100, 100)))


def test_images_are_read_upright_in_8_bits_and_their_size_is_checked_first(lfw, tmp_path):
  upright = _photo(lfw)
  # A photo stored sideways (turned 90 degrees clockwise) with an EXIF tag saying how to turn it back.
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / 'sideways.jpg', quality=98, exif=exif)
  _, pixels = face_records.read_image(str(tmp_path / 'sideways.jpg'))
  assert pixels.shape == upright.shape
  assert np.abs(pixels.astype(float) - upright).mean() < 4
  # A 16-bit greyscale PNG: scaled to 8 bits, not clipped to white.
  grey = upright[..., 0].astype(np.uint16) * 257
  Image.fromarray(grey).save(tmp_path / 'deep.png')
  assert Image.open(tmp_path / 'deep.png').mode.startswith('I')
  _, pixels = face_records.read_image(str(tmp_path / 'deep.png'))
  assert np.abs(pixels[..., 0].astype(float) - upright[..., 0]).max() <= 3
  # Refused from its header, before decoding.
  with pytest.raises(FaceDataError, match=r'deep.png: it is 100x100 pixels .* more than the limit'):
    face_records.read_image(str(tmp_path / 'deep.png'), max_pixels=5000)


def test_a_photo_larger_than_the_detection_limit_is_searched_shrunk_and_boxed_in_its_own_pixels(monkeypatch):
  # The astronaut, 5x larger (2560x2560, 6.6 megapixels): the detector sees a copy shrunk to the limit (here
  # lowered to 1 megapixel, so that the test runs fast), and the box comes back in the photo's own pixels.
  astronaut = skimage_data.astronaut()
  big = np.asarray(Image.fromarray(astronaut).resize((2560, 2560), Image.Resampling.BILINEAR))
  embedder = DlibFaceEmbedder()
  small_embeddings, small_boxes = embedder.all_faces(astronaut)
  seen = []
  detector = embedder._aligner._detector  # pylint: disable=protected-access
  monkeypatch.setattr(embedder._aligner, '_detector',
                      lambda image, upsample: seen.append(image.shape) or detector(image, upsample))
  monkeypatch.setattr(face_embedding, 'MAX_DETECTION_PIXELS', 1_000_000)
  embeddings, boxes = embedder.all_faces(big)
  assert seen and all(h * w <= 1_000_000 for h, w, _ in seen)  # Never the whole 6.6 megapixels.
  assert boxes.shape == small_boxes.shape == (1, 4)
  np.testing.assert_allclose(boxes[0], small_boxes[0] * 5, atol=5 * 8)  # Within 8 pixels of the original's box.
  assert np.linalg.norm(embeddings[0] - small_embeddings[0]) < 0.3  # The same face (dlib's threshold: 0.6).


def test_a_stop_while_the_default_faces_are_built_leaves_no_partial_directory(tmp_path, monkeypatch):
  # Seen from a fresh directory: Ctrl-C while `face2music train` built the faces left `<faces>.incomplete-<uuid>`.
  monkeypatch.setattr(default_faces, '_NUM_LFW_FACES', 2)
  config = default.get_config('tiny')
  config.data_dir = str(tmp_path)
  convert = face_records.convert_folder
  written = []

  def convert_then_stop(*args, **kwargs):
    written.extend(p for p in convert(*args, **kwargs) if os.path.exists(p))  # The first split's shards ...
    raise KeyboardInterrupt  # ... then Ctrl-C.

  monkeypatch.setattr(face_records, 'convert_folder', convert_then_stop)
  with pytest.raises(KeyboardInterrupt):
    default_faces.prepare_default_faces(config)
  assert written and '.incomplete-' in written[0]  # The stop came after shards were written into the build.
  assert os.listdir(os.path.join(str(tmp_path), 'faces')) == []
  assert not default_faces.is_built(config)
