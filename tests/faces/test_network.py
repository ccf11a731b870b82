"""The face network: parity with a PyTorch InceptionResnetV1, weights files, the embedder, refinement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn
from torch.nn import functional as F

from face2music_jax import losses
from face2music_jax.faces import convert as face_convert
from face2music_jax.faces import network

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

# A small variant, fast enough to train in a test; 80 pixels is about the smallest input it takes.
SMALL = network.InceptionResnetV1(repeats=(1, 1, 1), width=1 / 8, embedding_dim=32)
SMALL_SIZE = 80


class _TorchConv(tnn.Module):
  """facenet-pytorch's BasicConv2d: conv without bias, BN (eps 1e-3), ReLU."""

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = tnn.BatchNorm2d(cout, eps=1e-3)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _torch_branches(module, cin, branches):
  """Sets branch{i}: one conv directly, several in an nn.Sequential, as facenet-pytorch names them.

  branches: per branch, a list of (out channels, kernel, stride, padding).
  """
  for i, convs in enumerate(branches):
    layers, c = [], cin
    for cout, kernel, stride, padding in convs:
      layers.append(_TorchConv(c, cout, kernel, stride, padding))
      c = cout
    setattr(module, f'branch{i}', layers[0] if len(layers) == 1 else tnn.Sequential(*layers))
  module.num_branches = len(branches)


class _TorchResidual(tnn.Module):

  def __init__(self, channels, branches, scale, relu=True):
    super().__init__()
    _torch_branches(self, channels, branches)
    self.conv2d = tnn.Conv2d(sum(b[-1][0] for b in branches), channels, 1)
    self.scale, self.relu = scale, relu

  def forward(self, x):
    y = torch.cat([getattr(self, f'branch{i}')(x) for i in range(self.num_branches)], 1)
    y = self.conv2d(y) * self.scale + x
    return F.relu(y) if self.relu else y


class _TorchReduction(tnn.Module):

  def __init__(self, channels, branches):
    super().__init__()
    _torch_branches(self, channels, branches)

  def forward(self, x):
    ys = [getattr(self, f'branch{i}')(x) for i in range(self.num_branches)]
    return torch.cat(ys + [F.max_pool2d(x, 3, 2)], 1)


def _block35():
  return _TorchResidual(256, [[(32, 1, 1, 0)], [(32, 1, 1, 0),
                                                (32, 3, 1, 1)], [(32, 1, 1, 0), (32, 3, 1, 1), (32, 3, 1, 1)]], 0.17)


def _block17():
  return _TorchResidual(896, [[(128, 1, 1, 0)], [(128, 1, 1, 0), (128, (1, 7), 1, (0, 3)), (128, (7, 1), 1, (3, 0))]],
                        0.10)


def _block8(scale=0.20, relu=True):
  return _TorchResidual(1792, [[(192, 1, 1, 0)], [(192, 1, 1, 0), (192, (1, 3), 1, (0, 1)), (192, (3, 1), 1, (1, 0))]],
                        scale, relu)


class TorchInceptionResnetV1(tnn.Module):
  """facenet-pytorch's InceptionResnetV1 up to the normalised 512-d embedding, with its module names."""

  def __init__(self):
    super().__init__()
    self.conv2d_1a = _TorchConv(3, 32, 3, 2)
    self.conv2d_2a = _TorchConv(32, 32, 3)
    self.conv2d_2b = _TorchConv(32, 64, 3, 1, 1)
    self.conv2d_3b = _TorchConv(64, 80, 1)
    self.conv2d_4a = _TorchConv(80, 192, 3)
    self.conv2d_4b = _TorchConv(192, 256, 3, 2)
    self.repeat_1 = tnn.Sequential(*[_block35() for _ in range(5)])
    self.mixed_6a = _TorchReduction(256, [[(384, 3, 2, 0)], [(192, 1, 1, 0), (192, 3, 1, 1), (256, 3, 2, 0)]])
    self.repeat_2 = tnn.Sequential(*[_block17() for _ in range(10)])
    self.mixed_7a = _TorchReduction(896,
                                    [[(256, 1, 1, 0),
                                      (384, 3, 2, 0)], [(256, 1, 1, 0),
                                                        (256, 3, 2, 0)], [(256, 1, 1, 0), (256, 3, 1, 1),
                                                                          (256, 3, 2, 0)]])
    self.repeat_3 = tnn.Sequential(*[_block8() for _ in range(5)])
    self.block8 = _block8(1.0, relu=False)
    self.last_linear = tnn.Linear(1792, 512, bias=False)
    self.last_bn = tnn.BatchNorm1d(512, eps=1e-3)

  def forward(self, x):
    x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
    x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(F.max_pool2d(x, 3, 2))))
    x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
    x = self.block8(x).mean(dim=(2, 3))
    return F.normalize(self.last_bn(self.last_linear(x)), p=2, dim=1)


@pytest.fixture(scope='module')
def torch_state_dict():
  """A random-weight reference network in eval mode and its state dict.

  The BN running statistics are those of a calibration batch, randomly perturbed: with them every layer sees
  roughly standardised inputs, so the embedding depends on the image and the comparison tests every layer.
  """
  torch.manual_seed(0)
  net = TorchInceptionResnetV1()
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

  def eval_loss(v):
    embeddings = network.CropEmbedder(v, image_size=SMALL_SIZE, batch_size=len(images))(images)
    return float(losses.triplet_loss(jnp.asarray(embeddings), jnp.asarray(labels), 0.2, 'batch_hard'))

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
