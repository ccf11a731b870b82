"""The generic loops: batched application of a jitted function."""

import numpy as np

from face2music_jax import loops


def test_batched_equals_one_call_and_compiles_one_shape():
  shapes = set()

  def fn(x):
    shapes.add(x.shape)
    return 2 * x, x.sum(1)

  x = np.arange(14.0).reshape(7, 2)
  doubled, sums = loops.batched(fn, x, batch_size=3)
  np.testing.assert_array_equal(doubled, 2 * x)
  np.testing.assert_array_equal(sums, x.sum(1))
  assert shapes == {(3, 2)}
