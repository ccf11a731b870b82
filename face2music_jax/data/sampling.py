"""Which examples: batches as a pure function of (seed, step), so that resuming at any step reproduces an
uninterrupted run exactly; faces spread over identities."""

from collections.abc import Sequence

import numpy as np


class EpochSampler:
  """Indices of the examples in the batch at a given step: each epoch is a fresh seeded permutation.

  Attributes:
    num_examples: size of the (host-local) dataset.
    batch_size: examples per batch (host-local).
    seed: the run's seed; the process index is folded in so that hosts draw independent orders.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int, process_index: int = 0):
    if num_examples < 1:
      raise ValueError('Cannot sample batches from an empty dataset.')
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = process_index
    self._cache: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      self._cache = {
          epoch: np.random.default_rng([self.seed, self.process_index, epoch]).permutation(self.num_examples)
      }
    return self._cache[epoch]

  def indices(self, step: int) -> np.ndarray:
    """[batch_size] int64 indices of the batch at `step` (batches may cross epoch boundaries)."""
    positions = step * self.batch_size + np.arange(self.batch_size)
    epochs, offsets = np.divmod(positions, self.num_examples)
    return np.asarray([self._permutation(int(e))[o] for e, o in zip(epochs, offsets)])


def round_robin_by_identity(names: Sequence[str] | np.ndarray, limit: int) -> np.ndarray:
  """Indices of up to `limit` faces taken round-robin over identities: every identity's first view, then every
  identity's second view, and so on (identities in order of first appearance)."""
  by_identity: dict[str, list[int]] = {}
  for i, name in enumerate(names):
    by_identity.setdefault(str(name), []).append(i)
  views = list(by_identity.values())
  order = [v[r] for r in range(max(map(len, views), default=0)) for v in views if r < len(v)]
  return np.asarray(order[:limit], np.int64)
