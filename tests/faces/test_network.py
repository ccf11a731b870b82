"""The face network: parity with a PyTorch InceptionResnetV1, weights files, the embedder, refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax import losses
from face2music_jax.faces import convert as face_convert
from face2music_jax.faces import network

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

# A small variant, fast enough to train in a test; 80 pixels is about the smallest input it takes.
SMALL = network.InceptionResnetV1(repeats=(1, 1, 1), width=1 / 8, embedding_dim=32)
SMALL_SIZE = 80


@pytest.fixture(scope='module')
def torch_state_dict():
  """A random-weight reference network in eval mode and its state dict.

  The BN running statistics are those of a calibration batch, randomly perturbed: with them every layer sees
  roughly standardised inputs, so the embedding depends on the image and the comparison tests every layer.
  """
  import torch  # pylint: disable=import-outside-toplevel  (seconds to import: only where used)
  from torch import nn as tnn  # pylint: disable=import-outside-toplevel

  from tests.faces import facenet_torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  net = facenet_torch.TorchInceptionResnetV1()
  bns = [m for m in net.modules() if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d))]
  with torch.no_grad():
    for m in bns:
      m.momentum = 1.0  # The running statistics become those of the next batch.
      m.weight.uniform_(0.5, 1.5)
      m.bias.normal_(0.0, 0.1)
    net.train()(torch.randn(4, 3, 160, 160))
    for m in bns:
      m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
      m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.2))
  return net.eval(), net.state_dict()


@pytest.fixture(scope='module')
def small_variables():
  return network.init_face_network(SMALL, seed=0, image_size=SMALL_SIZE)


def _random_faces(n, size, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_converted_network_matches_pytorch(torch_state_dict, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  net, state_dict = torch_state_dict
  # A real facenet-pytorch file also holds the identity classifier, which the converter skips.
  full = dict(state_dict, **{'logits.weight': torch.zeros(8631, 512), 'logits.bias': torch.zeros(8631)})
  torch.save(full, tmp_path / 'facenet.pt')
  assert face_convert.main(
      ['convert', f'--torch_state_dict={tmp_path / "facenet.pt"}', f'--output={tmp_path / "facenet.npz"}']) == 0

  embedder = network.CropEmbedder(str(tmp_path / 'facenet.npz'), batch_size=2)
  images = _random_faces(2, 160, seed=1)
  got = embedder(images)
  with torch.no_grad():
    x = torch.from_numpy((images.astype(np.float32) - 127.5) / 128.0).permute(0, 3, 1, 2)
    want = net(x).numpy()
  assert embedder.dim == 512 and got.shape == (2, 512) and got.dtype == np.float32
  assert np.linalg.norm(want[0] - want[1]) > 0.1  # The random network still tells inputs apart.
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_converter_names_missing_unexpected_and_misshapen_keys(torch_state_dict):
  state_dict = {k: v.numpy() for k, v in torch_state_dict[1].items()}
  del state_dict['repeat_2.3.branch1.2.conv.weight']
  state_dict['repeat_3.5.conv2d.bias'] = np.zeros(1792, np.float32)
  state_dict['last_bn.running_var'] = np.ones(256, np.float32)
  with pytest.raises(ValueError) as error:
    face_convert.convert_state_dict(state_dict)
  for name in ('missing repeat_2.3.branch1.2.conv.weight', 'unexpected repeat_3.5.conv2d.bias',
               'last_bn.running_var has shape (256,)'):
    assert name in str(error.value)
  assert 'num_batches_tracked' not in str(error.value)


def test_weights_file_round_trip_and_errors(small_variables, tmp_path):
  variables = small_variables
  path = tmp_path / 'small.npz'
  network.save_face_weights(path, variables)
  loaded = network.load_face_weights(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, variables))
  assert network.network_for_variables(loaded) == SMALL

  with pytest.raises(FileNotFoundError, match='nope.npz'):
    network.load_face_weights(tmp_path / 'nope.npz')
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(ValueError, match='Cannot read'):
    network.load_face_weights(tmp_path / 'junk.npz')

  flat = dict(np.load(path))
  flat['params/repeat_2_0/conv2d/kernel'] = np.zeros((1, 1, 7, 7), np.float32)
  np.savez(tmp_path / 'bad.npz', **flat)
  with pytest.raises(ValueError, match=r'params/repeat_2_0/conv2d/kernel has shape \(1, 1, 7, 7\)'):
    network.load_face_weights(tmp_path / 'bad.npz')


def test_embedder_batches_resizes_and_normalises(small_variables):
  embedder = network.CropEmbedder(small_variables, image_size=SMALL_SIZE, batch_size=3)
  images = _random_faces(7, 100, seed=2)
  out = embedder(images)
  assert embedder.dim == 32 and out.shape == (7, 32) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
  # Zero-padding the last batch must not change anyone's embedding (eval-mode BN is per example).
  np.testing.assert_allclose(out[6:], embedder(images[6:]), atol=1e-5)
  grey = embedder(images[:2, :, :, 0])
  np.testing.assert_allclose(grey, embedder(np.repeat(images[:2, :, :, :1], 3, axis=-1)), atol=1e-6)
  assert embedder(images[:0]).shape == (0, 32)
  with pytest.raises(ValueError, match='uint8'):
    embedder(images.astype(np.float32))


def _augmented_views(num_identities, views, size, seed):
  """Smooth random colour 'faces', one per identity, seen through flips, crops and brightness changes."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for identity in range(num_identities):
    coarse = rng.uniform(0, 255, (8, 8, 3))
    base = np.kron(coarse, np.ones((size // 8 + 2, size // 8 + 2, 1)))
    for _ in range(views):
      top, left = rng.integers(0, base.shape[0] - size, 2)
      view = base[top:top + size, left:left + size] * rng.uniform(0.8, 1.2)
      images.append(view[:, ::-1] if rng.random() < 0.5 else view)
      labels.append(identity)
  return np.clip(images, 0, 255).astype(np.uint8), np.array(labels)


def test_refinement_lowers_triplet_loss(small_variables):
  images, labels = _augmented_views(num_identities=6, views=6, size=SMALL_SIZE, seed=0)
  variables = small_variables

  triplet_loss = jax.jit(lambda e, l: losses.triplet_loss(e, l, 0.2, 'batch_hard'))

  def eval_loss(v):
    embeddings = network.CropEmbedder(v, image_size=SMALL_SIZE, batch_size=len(images))(images)
    return float(triplet_loss(jnp.asarray(embeddings), jnp.asarray(labels)))

  before = eval_loss(variables)
  # Less dropout than facenet-pytorch's 0.6: the small variant pools only 224 features.
  refined = network.refine_face_network(variables, images, labels, steps=60, batch_size=16, lr=3e-3, margin=0.2, seed=0,
                                        dropout_rate=0.2, image_size=SMALL_SIZE)
  after = eval_loss(refined)
  assert after < 0.5 * before, (before, after)  # Typically 0.29 -> 0.04.
  assert eval_loss(variables) == before  # The caller's variables survive the donated train steps.


def test_small_widths_must_give_whole_channels():
  with pytest.raises(ValueError, match='multiple of 1/16'):
    network.init_face_network(network.InceptionResnetV1(repeats=(1, 1, 1), width=0.3), image_size=SMALL_SIZE)
  with pytest.raises(ValueError, match='at least 75'):
    network.init_face_network(SMALL, image_size=64)
