"""The Flax face network on every run path (config.data.face_embedding='network'): the default faces, the converter
and the precompute tool, training, translation and the refine command, with random weights of a narrow 512-d
network; embeddings of one embedder never read as another's; bad weights named at start."""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
import soundfile
import tensorflow as tf
from absl import app
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import cli
from face2music_jax import config_lib
from face2music_jax import gan
from face2music_jax import train
from face2music_jax import translate
from face2music_jax import translator as translator_lib
from face2music_jax import workdir as workdir_lib
from face2music_jax.data import default_faces
from face2music_jax.data import faces
from face2music_jax.faces import convert as face_convert
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import images
from face2music_jax.faces import network as face_network
from face2music_jax.faces import records as face_records
from face2music_jax.faces import refine as face_refine
from face2music_jax.faces.records import FaceDataError
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

# A narrow variant of the network (1/8 of the channels, one block of each kind) with the VGGFace2 network's 512-d
# output, fast enough for tests at the real 160x160 input.
SMALL = face_network.InceptionResnetV1(repeats=(1, 1, 1), width=1 / 8, embedding_dim=512)
SIZE = face_embedding.NETWORK_CHIP_SIZE


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp('face_network') / 'small.npz'
  face_network.save_face_weights(path, face_network.init_face_network(SMALL, seed=0, image_size=SIZE))
  return str(path)


def _other_weights(weights: str, path: str) -> str:
  """The same network with one weight changed: another fingerprint."""
  flat = dict(np.load(weights))
  flat['params/last_linear/kernel'] = flat['params/last_linear/kernel'] + 0.01
  np.savez(path, **flat)
  return path


def network_config(data_dir: str, weights: str) -> ml_collections.ConfigDict:
  config = helpers.tiny_config('aux')
  config.data_dir = data_dir
  config.data.face_embedding = 'network'
  config.data.face_weights = weights
  config.data.embedding_dim = 512
  return config


@pytest.fixture(scope='module')
def network_faces(tiny_data_dir, weights) -> tuple[ml_collections.ConfigDict, dict[str, list[str]]]:
  """The tiny config with the network, and its default faces (built beside the dlib ones of tiny_data_dir)."""
  config = network_config(tiny_data_dir, weights)
  return config, default_faces.prepare_default_faces(config)


def _record_images(files: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
  """The decoded images (uint8 [H, W, 3], sizes differ) and stored embeddings of face TFRecords, in file order."""
  images, embeddings = [], []
  for path in files:
    for example in face_records.read_records(path):
      feature = example.features.feature
      images.append(tf.io.decode_jpeg(feature[face_records.IMAGE_KEY].bytes_list.value[0], channels=3).numpy())
      embeddings.append(list(feature[face_records.EMBEDDING_KEY].float_list.value))
  return images, np.array(embeddings, np.float32)


def _network_embeddings(weights: str, images: list[np.ndarray], assume_cropped: bool) -> np.ndarray:
  """What the network gives on the faces, aligned as every path aligns them: 160x160 chips by dlib's landmarks."""
  aligner = face_embedding.FaceAligner(assume_cropped, SIZE)
  chips = np.concatenate([aligner.face_chips(image[None]) for image in images])
  return face_network.CropEmbedder(weights, image_size=SIZE)(chips)


def test_default_faces_hold_the_networks_embeddings(network_faces, weights):
  config, files = network_faces
  fingerprint = face_embedding.face_weights_fingerprint(weights)
  root = os.path.dirname(files['train'][0])
  assert os.path.basename(root) == f'lfw_subset_f2_v2_n20_network-{fingerprint}'
  dlib_config = helpers.tiny_config('aux')
  dlib_config.data_dir = config.data_dir
  assert default_faces.default_faces_dir(dlib_config) != root  # The dlib faces of the same data_dir live apart.
  manifest = json.load(open(os.path.join(root, 'faces.json')))
  assert manifest['embedder'] == f'network:{fingerprint}' and manifest['embedding_dim'] == 512
  for split in ('train', 'test'):
    images, stored = _record_images(files[split])
    assert stored.shape == (len(images), 512)
    np.testing.assert_allclose(stored, _network_embeddings(weights, images, assume_cropped=True), atol=1e-5)
    assert faces.stored_embedder(files[split]) == f'network:{fingerprint}'
  # Different faces, different embeddings (the random network still tells them apart).
  assert np.linalg.norm(stored[0] - stored[1:], axis=1).min() > 1e-3
  assert faces.face_files(config, 'train') == files['train']
  assert faces.load_faces(files['train'], 32,
                          embedding_dim=512)['embedding'].shape == (len(_record_images(files['train'])[0]), 512)


def test_embeddings_of_another_embedder_are_never_reused(network_faces, weights, tmp_path):
  config, files = network_faces
  config = config.copy_and_resolve_references()
  other = network_config(config.data_dir, _other_weights(weights, str(tmp_path / 'other.npz')))
  assert default_faces.default_faces_dir(other) != default_faces.default_faces_dir(
      config)  # Other weights, other faces.
  # Faces of one network found where another's should be: an error, not a silent reuse.
  other.data_dir = str(tmp_path / 'data')
  shutil.copytree(os.path.dirname(files['train'][0]), default_faces.default_faces_dir(other))
  with pytest.raises(FaceDataError, match='hold embeddings of the face embedder .network:.*delete'):
    default_faces.prepare_default_faces(other)

  # Records given as face_tfrecords: checked against the config's embedder.
  pattern = os.path.join(os.path.dirname(files['train'][0]), '{split}-*.tfrecord')
  for c in (config, other):
    c.data.face_source = 'tfrecords'
    c.data.face_tfrecords = pattern
  assert faces.face_files(config, 'test') == files['test']
  with pytest.raises(
      FaceDataError, match=rf"{files['test'][0]} holds embeddings of the face embedder "
      rf"'network:{face_embedding.face_weights_fingerprint(weights)}'.*'network:"):
    faces.face_files(other, 'test')
  dlib_config = helpers.tiny_config('aux')
  dlib_config.data.face_source = 'tfrecords'
  dlib_config.data.face_tfrecords = pattern
  with pytest.raises(FaceDataError, match="config embeds faces with 'dlib'"):
    faces.face_files(dlib_config, 'test')

  # Re-embedding with an embedder without a tag removes the old tag.
  example = face_records.make_example(b'', 0, 'n', 'n/0.jpg', np.ones(3), embedder='dlib')
  face_records.set_embedding(example, np.zeros(3))
  assert face_records.EMBEDDER_KEY not in example.features.feature


def test_converter_and_precompute_tool_embed_with_the_network(weights, tmp_path, capsys):
  lfw = (skimage_data.lfw_subset()[:6] * 255).round().astype(np.uint8)
  for i, image in enumerate(lfw):
    os.makedirs(tmp_path / 'folder' / f'n{i // 2}', exist_ok=True)
    Image.fromarray(image).save(tmp_path / 'folder' / f'n{i // 2}' / f'{i}.jpg', quality=95)
  flags = ['--embed=network', f'--face_weights={weights}', '--assume_cropped']
  face_records.main(
      face_records._parse_flags([
          'face_records', 'convert', f'--input_dir={tmp_path / "folder"}', f'--output_dir={tmp_path / "tfr"}',
          '--num_shards=1', *flags
      ]))
  converted = [str(tmp_path / 'tfr' / 'train-00000-of-00001.tfrecord')]
  images, stored = _record_images(converted)
  assert stored.shape == (6, 512)
  np.testing.assert_allclose(stored, _network_embeddings(weights, images, assume_cropped=True), atol=1e-5)
  tag = f'network:{face_embedding.face_weights_fingerprint(weights)}'
  assert faces.stored_embedder(converted) == tag

  plain = face_records.convert_folder(str(tmp_path / 'folder'), str(tmp_path / 'plain'), 'train', num_shards=1)
  face_records.main(
      face_records._parse_flags(
          ['face_records', 'embed', f'--input={plain[0]}', f'--output_dir={tmp_path / "embedded"}', *flags]))
  embedded = [str(tmp_path / 'embedded' / os.path.basename(plain[0]))]
  np.testing.assert_allclose(
      _record_images(embedded)[1], _network_embeddings(weights,
                                                       _record_images(plain)[0], assume_cropped=True), atol=1e-5)
  assert faces.stored_embedder(embedded) == tag

  for argv, message in [(['--embed=network'], '--embed=network needs --face_weights'),
                        (['--embed=dlib', f'--face_weights={weights}'], 'only used with --embed=network')]:
    with pytest.raises(SystemExit):
      face_records._parse_flags(['face_records', 'embed', '--input=x', '--output_dir=y', *argv])
    assert message in capsys.readouterr().err
  with pytest.raises(app.UsageError, match=f'{tmp_path}/missing.npz'):
    face_records.main(
        face_records._parse_flags([
            'face_records', 'embed', f'--input={plain[0]}', '--output_dir=y', '--embed=network',
            f'--face_weights={tmp_path}/missing.npz'
        ]))


@pytest.fixture(scope='module')
def trained(network_faces, tmp_path_factory):
  """A tiny aux model trained for 2 steps on the network's default faces, and a photo of the astronaut's head."""
  config, _ = network_faces
  config = config.copy_and_resolve_references()
  config.model.generator = 'harmonic'
  config.train.num_steps = 2
  root = tmp_path_factory.mktemp('network_run')
  workdir = str(root / 'workdir')
  state = train.train(config, workdir)
  photo = str(root / 'astronaut.jpg')
  Image.fromarray(skimage_data.astronaut()[:300]).save(photo, quality=95)
  return config, workdir, state, photo


def test_training_runs_on_the_networks_embeddings(trained):
  config, workdir, state, _ = trained
  assert int(gan.to_host(state.step)) == 2
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']
  lines = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [line['step'] for line in lines] == [1, 2] and all(np.isfinite(line['metric_loss']) for line in lines)
  written = json.load(open(os.path.join(workdir, 'config.json')))['data']
  assert (written['face_embedding'], written['face_weights'],
          written['embedding_dim']) == ('network', config.data.face_weights, 512)


def test_translate_embeds_photos_with_the_network(trained, weights, tmp_path):
  _, workdir, _, photo = trained
  config, _ = cli.config_and_workdir(None, workdir)  # As run_translate.py --workdir: the config training wrote.
  model = translator_lib.Translator.load(workdir)
  embeddings, boxes = model.faces(photo)
  chips, expected_boxes = face_embedding.FaceAligner(False, SIZE).all_face_chips(images.read_rgb(photo))
  expected = face_network.CropEmbedder(weights, image_size=SIZE)(chips)
  assert embeddings.shape == (1, 512)
  np.testing.assert_allclose(embeddings, expected, atol=1e-5)
  np.testing.assert_array_equal(boxes, expected_boxes)

  (translation,), _ = translate.translate(model, [photo], pitch=60, output_dir=str(tmp_path))
  audio, rate = soundfile.read(translation.wav)
  generator, g_vars, _ = gan.restore_generator(config, workdir)
  want = gan.make_generate(generator)(g_vars, expected, np.array([config_lib.pitch_class(config, 60)], np.int32))
  assert rate == 16000 and np.abs(audio).max() > 0
  np.testing.assert_allclose(audio, np.clip(np.asarray(want)[0], -1, 1), atol=1e-4)  # 16-bit PCM.


def test_a_bundle_checks_the_face_network_weights_it_was_trained_with(trained, tmp_path):
  """A bundle records the face network's weights by path (its config) and by fingerprint (its manifest): other
  weights at that path are refused, not used silently."""
  config, workdir, _, photo = trained
  bundle = str(tmp_path / 'bundle')
  manifest = translator_lib.export_bundle(workdir, bundle)
  assert manifest['face_embedder'] == face_embedding.embedder_tag(config)
  assert translator_lib.Translator.load(bundle).faces(photo)[0].shape == (1, 512)
  weights = config.data.face_weights
  original = open(weights, 'rb').read()
  try:
    with np.load(weights) as arrays:  # The same names and shapes, other values.
      other = {k: v * 1.01 if v.dtype.kind == 'f' else v for k, v in arrays.items()}
    np.savez(weights, **other)
    with pytest.raises(translator_lib.BundleError, match='is not the file it was trained with'):
      translator_lib.Translator.load(bundle).faces(photo)
  finally:
    with open(weights, 'wb') as f:
      f.write(original)


def test_refine_command_writes_refined_weights(network_faces, weights, tmp_path, caplog):
  config, files = network_faces
  output = str(tmp_path / 'refined.npz')
  records = os.path.join(os.path.dirname(files['train'][0]), 'train-*.tfrecord')
  with caplog.at_level('INFO'):
    assert face_convert.main([
        'refine', f'--weights={weights}', f'--records={records}', f'--output={output}', '--steps=2', '--batch_size=8',
        '--views_per_identity=2', '--assume_cropped', '--lr=1e-3', '--log_every=1'
    ]) == 0
  assert 'Face network refinement step 2/2: triplet loss' in caplog.text
  refined, before = face_network.load_face_weights(output), face_network.load_face_weights(weights)
  assert face_network.network_for_variables(refined) == face_network.network_for_variables(before)
  assert not os.path.exists(output + '.incomplete')
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), refined, before))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(refined))
  assert sum(changed) > 0.9 * len(changed)  # Adam moves every parameter; batch norm's statistics follow the faces.
  # The refined network is another embedder: its faces are built apart.
  refined_config = network_config(config.data_dir, output)
  assert default_faces.default_faces_dir(refined_config) != default_faces.default_faces_dir(config)

  with pytest.raises(SystemExit):
    face_convert.main(['refine', f'--weights={weights}', f'--records={records}', f'--output={output}', '--steps=0'])
  chips, identities, names = face_refine.read_face_chips(records, face_embedding.FaceAligner(True, SIZE), max_images=5)
  assert chips.shape == (5, SIZE, SIZE, 3) and chips.dtype == np.uint8
  assert len(identities) == 5 and identities.max() < len(names) and names == sorted(names)


def test_bad_weights_fail_at_start_naming_the_field(network_faces, weights, tmp_path):
  config, _ = network_faces
  config = config.copy_and_resolve_references()
  workdir = str(tmp_path / 'workdir')
  config.data.face_weights = str(tmp_path / 'missing.npz')
  with pytest.raises(config_lib.ConfigError, match=r'config.data.face_weights = .*missing.npz.*no such file'):
    train.train(config, workdir)
  assert not os.path.exists(workdir)  # Failed before anything was written.
  with pytest.raises(config_lib.ConfigError, match='config.data.face_weights = .*missing.npz'):
    face_embedding.make_embedder(config)  # Translation's embedder (Translator.faces).

  config.data.face_weights = weights
  config.data.embedding_dim = 128
  with pytest.raises(config_lib.ConfigError, match=r'config.data.embedding_dim = 128 is invalid: .* 512-d'):
    train.train(config, workdir)
  with pytest.raises(config_lib.ConfigError, match=r'config.data.embedding_dim = 128 is invalid: .* 512-d'):
    face_embedding.make_embedder(config)

  # A file whose last layer is readable but another variable is not of the network: named when it is loaded.
  flat = dict(np.load(weights))
  flat['params/repeat_2_0/conv2d/kernel'] = np.zeros((1, 1, 7, 7), np.float32)
  np.savez(tmp_path / 'bad.npz', **flat)
  config.data.face_weights = str(tmp_path / 'bad.npz')
  config.data.embedding_dim = 512
  config_lib.validate(config)
  with pytest.raises(
      config_lib.ConfigError, match=r'config.data.face_weights = .*bad.npz.*params/repeat_2_0/conv2d/'
      r'kernel has shape \(1, 1, 7, 7\)'):
    face_embedding.make_embedder(config)


def test_a_run_is_not_resumed_with_other_weights_at_the_same_path(weights, tmp_path):
  config = network_config(str(tmp_path / 'data'), str(tmp_path / 'face.npz'))
  shutil.copyfile(weights, config.data.face_weights)
  workdir_lib.accept_run(config, str(tmp_path / 'run'))
  os.makedirs(tmp_path / 'run' / 'checkpoints' / '2')  # The identity binds once a checkpoint exists.
  workdir_lib.accept_run(config, str(tmp_path / 'run'))  # The same weights: the same run.
  _other_weights(weights, config.data.face_weights)  # Replaced in place: the path alone would not tell.
  with pytest.raises(
      workdir_lib.WorkdirError, match=r"config.data.face_embedder = 'network:[0-9a-f]{16}' here, "
      r"'network:[0-9a-f]{16}' in the work directory"):
    workdir_lib.accept_run(config, str(tmp_path / 'run'))
