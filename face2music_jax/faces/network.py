"""The face embedding network: Inception-ResNet-v1 (FaceNet), 512-d, VGGFace2 weights from a user's file.

The architecture is the one of facenet-pytorch's `InceptionResnetV1` (Szegedy et al. 2017; the VGGFace2 weights
`20180402-114759-vggface2.pt` of David Sandberg's FaceNet): input 160x160 RGB standardised as (x - 127.5) / 128,
a stem of plain convolutions, 5 Block35, Mixed_6a, 10 Block17, Mixed_7a, 5 Block8 and a final Block8 without
ReLU, global average pooling, dropout, a 1792 -> 512 linear layer without bias, batch norm, L2 normalisation.
Parameter names follow facenet-pytorch's module names, so `convert.py` maps a state dict mechanically:
torch `repeat_1.0.branch1.1.conv.weight` is Flax `params/repeat_1_0/branch1_1/conv/kernel`.

Weights file format: an uncompressed `.npz` (`numpy.savez`) holding one float32 array per Flax variable, keyed by
its collection and module path joined with '/':
  `params/<module>/.../kernel|bias|scale` (conv kernels [kh, kw, in, out], dense kernels [in, out]) and
  `batch_stats/<module>/.../mean|var`,
e.g. `params/conv2d_1a/conv/kernel` [3, 3, 3, 32] and `batch_stats/last_bn/var` [512]. The file describes its
network: the block repeat counts, the width and the embedding size are read from the keys and shapes. Write one
with `save_face_weights`, or convert facenet-pytorch's state dict:
  python -m face2music_jax.faces.convert convert --torch_state_dict=20180402-114759-vggface2.pt --output=vggface2.npz
and refine it on face TFRecords (faces/refine.py):
  python -m face2music_jax.faces.convert refine --weights=vggface2.npz --records='/data/faces/train-*.tfrecord' \
      --output=refined.npz --steps=2000

`CropEmbedder` turns uint8 face crops into embeddings, and `refine_face_network` fine-tunes the network with a
triplet loss on face identities, as the paper does. The data pipeline, training and translation use the network
on dlib-aligned 160x160 chips (`face2music_jax/faces/embedding.py: FaceNetworkEmbedder`, picked by
`make_embedder` for `--config.data.face_embedding=network --config.data.face_weights=<file>
--config.data.embedding_dim=512`).
"""

from collections.abc import Mapping
import functools
import os
import pickle
from typing import Any
import zipfile

from absl import logging
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from face2music_jax import losses

Variables = Mapping[str, Any]  # {'params': ..., 'batch_stats': ...}, nested dicts of arrays.

DEFAULT_IMAGE_SIZE = 160  # Pixels; the VGGFace2 weights were trained on 160x160 crops.
MIN_IMAGE_SIZE = 75  # The unpadded convolutions and poolings leave nothing of a smaller input before Mixed_7a.

# Convolutions of each branch of the Inception blocks, as (output channels at width 1, kernel (h, w), stride).
# Stride-1 convolutions keep the size (torch padding k // 2); stride-2 ones are unpadded, as in facenet-pytorch.
_BLOCK35 = (((32, (1, 1), 1),), ((32, (1, 1), 1), (32, (3, 3), 1)), ((32, (1, 1), 1), (32, (3, 3), 1), (32, (3, 3), 1)))
_BLOCK17 = (((128, (1, 1), 1),), ((128, (1, 1), 1), (128, (1, 7), 1), (128, (7, 1), 1)))
_BLOCK8 = (((192, (1, 1), 1),), ((192, (1, 1), 1), (192, (1, 3), 1), (192, (3, 1), 1)))
_MIXED_6A = (((384, (3, 3), 2),), ((192, (1, 1), 1), (192, (3, 3), 1), (256, (3, 3), 2)))
_MIXED_7A = (((256, (1, 1), 1), (384, (3, 3), 2)), ((256, (1, 1), 1), (256, (3, 3), 2)),
             ((256, (1, 1), 1), (256, (3, 3), 1), (256, (3, 3), 2)))


def _channels(n: int, width: float) -> int:
  """Channels of a layer with n channels at width 1; widths are multiples of 1/16 so every count is whole."""
  c = n * width
  if c < 1 or c != int(c):
    raise ValueError(f'Width {width} gives {c} channels for a {n}-channel layer; use a multiple of 1/16.')
  return int(c)


class BasicConv(nn.Module):
  """Convolution without bias, batch norm (eps 0.001, as the TensorFlow original) and ReLU.

  Attributes:
    features: output channels.
    kernel_size: (h, w).
    stride: the same in both directions.
    padding: 'SAME' (symmetric for the odd kernels used here, as torch's padding=k // 2) or 'VALID'.
  """
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: str = 'VALID'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C] -> [B, H', W', features]."""
    x = nn.Conv(self.features, self.kernel_size, strides=self.stride, padding=self.padding, use_bias=False,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _branches(x: jax.Array, specs: tuple, width: float, train: bool) -> list[jax.Array]:
  """Runs the branches of an Inception block inside the calling module, named as facenet-pytorch's.

  A one-convolution branch is `branch{i}`; a longer one is a torch `nn.Sequential`, `branch{i}_{j}` here.
  """
  outputs = []
  for i, convs in enumerate(specs):
    y = x
    for j, (features, kernel_size, stride) in enumerate(convs):
      name = f'branch{i}' if len(convs) == 1 else f'branch{i}_{j}'
      y = BasicConv(_channels(features, width), kernel_size, stride, 'SAME' if stride == 1 else 'VALID',
                    name=name)(y, train)
    outputs.append(y)
  return outputs


class ResidualBlock(nn.Module):
  """Inception-ResNet block (Block35, Block17, Block8): x + scale * conv1x1(concat(branches)), then ReLU.

  Attributes:
    specs: the branches' convolutions (see `_BLOCK35`).
    scale: residual scaling (0.17, 0.10, 0.20; 1.0 for the last Block8).
    width: channel multiplier.
    activate: whether to apply the final ReLU (the last Block8 has none).
  """
  specs: tuple
  scale: float
  width: float = 1.0
  activate: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C] -> [B, H, W, C]."""
    y = jnp.concatenate(_branches(x, self.specs, self.width, train), axis=-1)
    y = nn.Conv(x.shape[-1], (1, 1), name='conv2d')(y)
    y = y * self.scale + x
    return nn.relu(y) if self.activate else y


class ReductionBlock(nn.Module):
  """Mixed_6a / Mixed_7a: stride-2 branches concatenated with a 3x3 stride-2 max pool of the input.

  Attributes:
    specs: the branches' convolutions (see `_MIXED_6A`).
    width: channel multiplier.
  """
  specs: tuple
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C] -> [B, (H - 3) // 2 + 1, (W - 3) // 2 + 1, C + branch channels]."""
    pooled = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    return jnp.concatenate(_branches(x, self.specs, self.width, train) + [pooled], axis=-1)


class InceptionResnetV1(nn.Module):
  """FaceNet's Inception-ResNet-v1, as facenet-pytorch's `InceptionResnetV1` without the classifier.

  Attributes:
    repeats: how many Block35, Block17 and Block8 (before the last one); facenet-pytorch's are (5, 10, 5).
    width: channel multiplier, a multiple of 1/16 (1 for the pretrained weights; smaller for fast tests).
    embedding_dim: output width (512 for the VGGFace2 weights).
    dropout_rate: dropout before the last linear layer, active only when training.
  """
  repeats: tuple[int, int, int] = (5, 10, 5)
  width: float = 1.0
  embedding_dim: int = 512
  dropout_rate: float = 0.6

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Embeds standardised faces.

    Args:
      images: [B, H, W, 3] float32, (pixel - 127.5) / 128 (see `preprocess_faces`); H, W = 160 for the
        pretrained weights, at least `MIN_IMAGE_SIZE`.
      train: batch statistics and dropout when True; running statistics, no dropout when False.
    Returns:
      [B, embedding_dim] float32 embeddings of unit L2 norm.
    """
    if min(images.shape[1:3]) < MIN_IMAGE_SIZE:
      raise ValueError(f'Face images must be at least {MIN_IMAGE_SIZE} pixels, got {images.shape[1:3]}.')
    w = self.width
    x = BasicConv(_channels(32, w), (3, 3), 2, name='conv2d_1a')(images, train)
    x = BasicConv(_channels(32, w), (3, 3), name='conv2d_2a')(x, train)
    x = BasicConv(_channels(64, w), (3, 3), padding='SAME', name='conv2d_2b')(x, train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    x = BasicConv(_channels(80, w), (1, 1), name='conv2d_3b')(x, train)
    x = BasicConv(_channels(192, w), (3, 3), name='conv2d_4a')(x, train)
    x = BasicConv(_channels(256, w), (3, 3), 2, name='conv2d_4b')(x, train)
    for i in range(self.repeats[0]):
      x = ResidualBlock(_BLOCK35, 0.17, w, name=f'repeat_1_{i}')(x, train)
    x = ReductionBlock(_MIXED_6A, w, name='mixed_6a')(x, train)
    for i in range(self.repeats[1]):
      x = ResidualBlock(_BLOCK17, 0.10, w, name=f'repeat_2_{i}')(x, train)
    x = ReductionBlock(_MIXED_7A, w, name='mixed_7a')(x, train)
    for i in range(self.repeats[2]):
      x = ResidualBlock(_BLOCK8, 0.20, w, name=f'repeat_3_{i}')(x, train)
    x = ResidualBlock(_BLOCK8, 1.0, w, activate=False, name='block8')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.embedding_dim, use_bias=False, name='last_linear')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, name='last_bn')(x)
    # As torch.nn.functional.normalize: the norm is floored so that a zero vector stays finite.
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def preprocess_faces(images: jax.Array, image_size: int = DEFAULT_IMAGE_SIZE) -> jax.Array:
  """uint8 [N, H, W, 3] -> float32 [N, image_size, image_size, 3], (x - 127.5) / 128 as facenet-pytorch.

  Resizing is bilinear, antialiased when shrinking.
  """
  x = images.astype(jnp.float32)
  if x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), 'linear')
  return (x - 127.5) / 128.0


def init_face_network(model: InceptionResnetV1, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE) -> dict[str, Any]:
  """Random variables {'params', 'batch_stats'} of `model` (the starting point when no weights are given)."""
  # Jitted, and with the 'rbg' generator, whose compilation for hundreds of parameter shapes is several times
  # faster than threefry's on a CPU (half a minute for the full network run op by op with threefry).
  init = jax.jit(functools.partial(model.init, train=False))
  return dict(init(jax.random.key(seed, impl='rbg'), jnp.zeros((1, image_size, image_size, 3))))


def variable_shapes(model: InceptionResnetV1) -> dict[str, tuple[int, ...]]:
  """Flat '/'-joined variable names of `model` -> shapes (the keys of its weights file), without computing."""
  shapes = jax.eval_shape(functools.partial(init_face_network, model))
  return {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep='/').items()}


def network_for_variables(variables: Variables) -> InceptionResnetV1:
  """The `InceptionResnetV1` whose variables these are, read from their names and shapes.

  Raises:
    ValueError: naming the variable that is missing or has a wrong shape.
  """
  params = variables.get('params', {})
  try:
    stem_channels = params['conv2d_1a']['conv']['kernel'].shape[-1]
    embedding_dim = params['last_linear']['kernel'].shape[-1]
  except (KeyError, TypeError) as e:
    raise ValueError(f'Face network variables lack params/conv2d_1a/conv/kernel or params/last_linear/kernel '
                     f'(found top-level modules {sorted(params)}).') from e
  repeats = tuple(sum(1 for name in params if name.startswith(f'repeat_{i}_')) for i in (1, 2, 3))
  model = InceptionResnetV1(repeats=repeats, width=stem_channels / 32, embedding_dim=embedding_dim)
  expected = variable_shapes(model)
  got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(dict(variables), sep='/').items()}
  problems = [f'missing {k} {s}' for k, s in expected.items() if k not in got]
  problems += [f'unexpected {k}' for k in got if k not in expected]
  problems += [f'{k} has shape {got[k]}, expected {s}' for k, s in expected.items() if k in got and got[k] != s]
  if problems:
    more = f'; and {len(problems) - 20} more' if len(problems) > 20 else ''
    raise ValueError(f'Face network variables do not fit InceptionResnetV1(repeats={repeats}, '
                     f'width={model.width}, embedding_dim={embedding_dim}): ' + '; '.join(problems[:20]) + more)
  return model


def save_face_weights(path: str | os.PathLike, variables: Variables) -> None:
  """Writes variables {'params', 'batch_stats'} to a flat .npz (format in the module docstring)."""
  flat = traverse_util.flatten_dict(dict(variables), sep='/')
  with open(path, 'wb') as f:  # A file object, so that numpy does not append '.npz' to the name.
    np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


def load_face_weights(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a weights file written by `save_face_weights` or the converter, and checks it.

  Returns:
    {'params': ..., 'batch_stats': ...} nested dicts of float32 numpy arrays.
  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a readable .npz, or a variable is missing, unexpected or of a wrong shape
      (named in the message).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Face network weights file not found: {path}')
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError('it holds one array, not named variables')
    with data:
      flat = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
    raise ValueError(f'Cannot read face network weights from {path} (expected an .npz of named variables): '
                     f'{e}') from e
  variables = traverse_util.unflatten_dict(flat, sep='/')
  try:
    network_for_variables(variables)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  return variables


def _as_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """Checks uint8 faces [N, H, W, 3]; greyscale [N, H, W] or [N, H, W, 1] is repeated to RGB."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
    raise ValueError(f'Expected uint8 [N, H, W, 3] faces, got {images.dtype} {images.shape}.')
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


@functools.partial(jax.jit, static_argnums=(0, 3))
def _embed(model: InceptionResnetV1, variables: Variables, images: jax.Array, image_size: int) -> jax.Array:
  return model.apply(variables, preprocess_faces(images, image_size), train=False)


class CropEmbedder:
  """Face crops, as given -> embeddings with the Inception-ResNet-v1 network (eval mode); no detection or alignment
  (`faces/embedding.py: FaceNetworkEmbedder` aligns faces with dlib first, then embeds the chips with this).

  Same protocol as the dlib embedder: callable on uint8 images, returns float32 [N, dim], has `.dim`.

  Attributes:
    dim: embedding width (512 for the VGGFace2 weights).
  """

  def __init__(self, weights: str | os.PathLike | Variables, image_size: int = DEFAULT_IMAGE_SIZE,
               batch_size: int = 32):
    """Loads the network.

    Args:
      weights: a weights file (see the module docstring) or variables {'params', 'batch_stats'}.
      image_size: faces are resized to this square size (pixels) before the network.
      batch_size: faces per forward pass.
    """
    variables = weights if isinstance(weights, Mapping) else load_face_weights(weights)
    self._model = network_for_variables(variables)
    self._variables = jax.device_put(variables)
    self._image_size = image_size
    self._batch_size = batch_size
    self.dim = self._model.embedding_dim

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Embeds faces.

    Args:
      images: uint8 [N, H, W, 3] RGB face crops ([N, H, W] or [N, H, W, 1] greyscale is repeated to RGB).
    Returns:
      float32 [N, dim] embeddings of unit L2 norm.
    """
    images = _as_rgb_uint8(images)
    n = len(images)
    if n == 0:
      return np.zeros((0, self.dim), np.float32)
    # Batches of min(batch_size, n rounded up to a power of 2), the last zero-padded: a few shapes, so a few
    # compilations, however many faces come at a time (the converter gives one at a time when sizes differ).
    batch = min(self._batch_size, 1 << (n - 1).bit_length())
    out = []
    for start in range(0, n, batch):
      chunk = images[start:start + batch]
      padded = np.pad(chunk, ((0, batch - len(chunk)), (0, 0), (0, 0), (0, 0)))
      out.append(np.asarray(_embed(self._model, self._variables, padded, self._image_size))[:len(chunk)])
    return np.concatenate(out).astype(np.float32)


def _identity_batches(identities: np.ndarray, batch_size: int, views_per_identity: int, rng: np.random.Generator):
  """Yields index batches of P identities x K views, so that every face has positives and negatives."""
  groups = [np.flatnonzero(identities == i) for i in np.unique(identities)]
  groups = [g for g in groups if len(g) >= 2]
  if len(groups) < 2:
    raise ValueError('Refinement needs at least 2 identities with at least 2 faces each.')
  k = views_per_identity
  p = min(batch_size // k, len(groups))
  if p < 2:
    raise ValueError(f'batch_size {batch_size} holds fewer than 2 identities of {k} views.')
  while True:
    chosen = rng.choice(len(groups), p, replace=False)
    yield np.concatenate([rng.choice(groups[c], k, replace=len(groups[c]) < k) for c in chosen])


def refine_face_network(variables: Variables, images: np.ndarray, identities: np.ndarray, *, steps: int,
                        batch_size: int, lr: float, margin: float, seed: int, mining: str = 'batch_hard',
                        views_per_identity: int = 4, dropout_rate: float = 0.6, image_size: int = DEFAULT_IMAGE_SIZE,
                        log_every: int = 50) -> dict[str, Any]:
  """Fine-tunes the face network with a triplet loss on identities (the paper refines its VGGFace2 network).

  Adam on all parameters, batch norm in train mode (its running statistics follow the new data), dropout on,
  random horizontal flips. Each batch holds batch_size // views_per_identity identities with
  views_per_identity faces each (drawn with replacement from identities that have fewer).

  Args:
    variables: the starting variables {'params', 'batch_stats'} (left unchanged).
    images: uint8 [N, H, W, 3] face crops (greyscale [N, H, W] is repeated to RGB).
    identities: [N] integer identity labels.
    steps: optimiser steps.
    batch_size: faces per step.
    lr: Adam learning rate.
    margin: triplet margin, in embedding distance (embeddings have unit norm).
    seed: seeds batch sampling, flips and dropout.
    mining: 'batch_hard' or 'semi_hard' (see `face2music_jax.losses.triplet_loss`).
    views_per_identity: faces of each identity in a batch.
    dropout_rate: dropout before the last linear layer (facenet-pytorch's default is 0.6; a narrow network
      needs less).
    image_size: faces are resized to this square size (pixels).
    log_every: steps between loss logs.
  Returns:
    The refined variables {'params', 'batch_stats'}.
  """
  images, identities = _as_rgb_uint8(images), np.asarray(identities)
  if len(images) != len(identities):
    raise ValueError(f'{len(images)} images but {len(identities)} identities.')
  model = network_for_variables(variables).clone(dropout_rate=dropout_rate)
  preprocess = jax.jit(preprocess_faces, static_argnums=1)
  faces = jnp.concatenate([preprocess(images[i:i + 256], image_size) for i in range(0, len(images), 256)])
  labels = jnp.asarray(identities)
  tx = optax.adam(lr)
  # Copies: the step donates its state, which must not invalidate the caller's arrays.
  params = jax.tree.map(jnp.array, variables['params'])
  state = {
      'params': params,
      'batch_stats': jax.tree.map(jnp.array, variables['batch_stats']),
      'opt_state': tx.init(params)
  }

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, faces, labels, index, key):
    flip_key, dropout_key = jax.random.split(key)
    x = faces[index]
    x = jnp.where(jax.random.bernoulli(flip_key, 0.5, (len(index), 1, 1, 1)), x[:, :, ::-1], x)

    def loss_fn(params):
      embeddings, updates = model.apply({
          'params': params,
          'batch_stats': state['batch_stats']
      }, x, train=True, mutable=['batch_stats'], rngs={'dropout': dropout_key})
      return losses.triplet_loss(embeddings, labels[index], margin, mining), updates['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'params': params, 'batch_stats': batch_stats, 'opt_state': opt_state}, loss

  batches = _identity_batches(identities, batch_size, views_per_identity, np.random.default_rng(seed))
  root = jax.random.key(seed)
  for step in range(steps):
    state, loss = train_step(state, faces, labels, jnp.asarray(next(batches)), jax.random.fold_in(root, step))
    if (step + 1) % log_every == 0 or step + 1 == steps:
      logging.info('Face network refinement step %d/%d: triplet loss %.4f', step + 1, steps, float(loss))
  return {'params': state['params'], 'batch_stats': state['batch_stats']}
