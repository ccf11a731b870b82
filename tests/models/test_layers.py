"""The fast conv layers against flax's stock layers (values and gradients), and the conditioning layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax.models import layers

SHAPES = [(25, 4), (7, 3), (3, 4), (24, 4)]  # (kernel_size, stride)


def _compare_with_stock(ours: nn.Module, stock: nn.Module, x: jax.Array) -> None:
  """Same variables in both: equal outputs and equal gradients w.r.t. input, kernel and bias."""
  params = stock.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)  # Bias != 0.
  probe = jax.random.normal(jax.random.key(3), stock.apply(params, x).shape)

  def loss(module, params, x):
    return jnp.sum(module.apply(params, x) * probe)

  np.testing.assert_allclose(ours.apply(params, x), stock.apply(params, x), atol=1e-5)
  got = jax.jit(jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(lambda p, x: loss(stock, p, x), argnums=(0, 1)))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), got, want)


@pytest.mark.slow
@pytest.mark.parametrize('kernel_size,stride', SHAPES)
def test_conv_transpose_equals_stock(kernel_size, stride):
  x = jax.random.normal(jax.random.key(0), (2, 9, 3))
  _compare_with_stock(layers.ConvTranspose1D(5, kernel_size, stride),
                      nn.ConvTranspose(5, (kernel_size,), strides=(stride,), padding='SAME'), x)


@pytest.mark.slow
@pytest.mark.parametrize('kernel_size,stride', SHAPES)
def test_strided_conv_equals_stock(kernel_size, stride):
  x = jax.random.normal(jax.random.key(0), (2, 9 * stride, 3))
  _compare_with_stock(layers.Conv1D(5, kernel_size, stride),
                      nn.Conv(5, (kernel_size,), strides=(stride,), padding='SAME'), x)


@pytest.mark.slow
@pytest.mark.parametrize('kernel_size,length', [(9, 8), (9, 3), (8, 5), (9, 9), (9, 32), (4, 6)])
def test_same_conv_equals_stock_with_kernels_longer_and_shorter_than_the_input(kernel_size, length):
  x = jax.random.normal(jax.random.key(0), (2, length, 3))
  _compare_with_stock(layers.SameConv1D(5, kernel_size), nn.Conv(5, (kernel_size,), padding='SAME'), x)


def test_strided_conv_rejects_indivisible_length():
  with pytest.raises(ValueError, match='divisible'):
    layers.Conv1D(2).init(jax.random.key(0), jnp.ones((1, 10, 1)))


def test_conditional_batch_norm_normalises_and_uses_labels():
  cbn = layers.ConditionalBatchNorm(num_classes=3)
  # Jitted, as the models call it: one compilation each instead of one per operation of an eager call.
  train = jax.jit(lambda v, x, labels: cbn.apply(v, x, labels, use_running_average=False, mutable=['batch_stats']))
  infer = jax.jit(lambda v, x, labels: cbn.apply(v, x, labels, use_running_average=True))
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (8, 16, 4))
  labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  variables = jax.jit(lambda key: cbn.init(key, x, labels, use_running_average=False))(jax.random.key(1))
  assert variables['params']['gamma']['embedding'].shape == (3, 4)
  np.testing.assert_array_equal(variables['params']['gamma']['embedding'], 1.0)
  np.testing.assert_array_equal(variables['params']['beta']['embedding'], 0.0)

  y, updates = train(variables, x, labels)
  np.testing.assert_allclose(np.mean(y, axis=(0, 1)), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.std(y, axis=(0, 1)), 1.0, atol=1e-3)
  assert not np.allclose(updates['batch_stats']['norm']['mean'], 0.0)

  params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(2), p.shape), variables['params'])
  variables = {'params': params, 'batch_stats': updates['batch_stats']}
  y0 = infer(variables, x, jnp.zeros_like(labels))
  y1 = infer(variables, x, jnp.ones_like(labels))
  assert not np.allclose(y0, y1)
  # Each example's output depends on its own label only.
  mixed = np.asarray(infer(variables, x, labels))
  np.testing.assert_allclose(mixed[labels == 0], np.asarray(y0)[labels == 0], rtol=1e-6)


def test_phase_shuffle_shifts_each_example_with_reflection():
  radius, length = 2, 10
  x = jax.random.normal(jax.random.key(0), (32, length, 3))
  shuffle = layers.PhaseShuffle(radius)
  np.testing.assert_array_equal(jax.jit(lambda x: shuffle.apply({}, x, train=False))(x), x)
  shuffled = jax.jit(lambda x: shuffle.apply({}, x, train=True, rngs={'phase_shuffle': jax.random.key(1)}))
  y = np.asarray(shuffled(x))
  padded = np.pad(np.asarray(x), ((0, 0), (radius, radius), (0, 0)), mode='reflect')
  found = set()
  for b in range(x.shape[0]):
    matches = [s for s in range(-radius, radius + 1) if np.array_equal(y[b], padded[b, radius - s:radius - s + length])]
    assert len(matches) == 1
    found.add(matches[0])
  assert found == set(range(-radius, radius + 1))
  grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(shuffled(x))))(x))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.slow
@pytest.mark.parametrize('layer', [layers.Conv1D(6, 25, 4), layers.ConvTranspose1D(6, 25, 4)])
def test_spectral_norm_wraps_fast_layers(layer):
  sn = nn.SpectralNorm(layer, n_steps=20)
  x = jax.random.normal(jax.random.key(0), (2, 16, 5))
  variables = sn.init(jax.random.key(1), x, update_stats=True)
  update = jax.jit(lambda v: sn.apply(v, x, update_stats=True, mutable=['batch_stats'])[1])
  for _ in range(10):
    updates = update(variables)
    variables = {**variables, **updates}
  kernel = variables['params']['layer_instance']['kernel']
  sigma = variables['batch_stats']['layer_instance/kernel/sigma']
  top = np.linalg.svd(np.asarray(kernel).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
  np.testing.assert_allclose(top / sigma, 1.0, rtol=1e-3)
  # The wrapped layer computes the unwrapped one with kernel / sigma.
  plain = {'params': {**variables['params']['layer_instance'], 'kernel': kernel / sigma}}
  np.testing.assert_allclose(sn.apply(variables, x, update_stats=False), layer.apply(plain, x), rtol=1e-4, atol=1e-5)
