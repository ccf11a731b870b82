"""Generic loops over in-memory arrays: a jitted function applied batch by batch, and a small Adam training loop."""

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from absl import logging

from face2music_jax import preemption
from face2music_jax import progress
from face2music_jax.data.sampling import EpochSampler


def batched(fn: Callable[..., Any], *arrays: np.ndarray, batch_size: int) -> Any:
  """Applies a jitted `fn` to row batches of `arrays` and concatenates its outputs (a pytree) on the host.

  The last batch is padded with copies of its last row, so `fn` compiles for one batch shape only.
  """
  n = len(arrays[0])
  outputs = []
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    size = len(chunk[0])
    chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - size, axis=0)]) for c in chunk]
    outputs.append(jax.tree.map(lambda o, size=size: np.asarray(o)[:size], fn(*chunk)))
    preemption.check()
  return jax.tree.map(lambda *o: np.concatenate(o), *outputs)


def fit(loss_fn: Callable[[Any, dict[str, jax.Array]], jax.Array], params: Any, arrays: dict[str, np.ndarray], *,
        steps: int, batch_size: int, lr: float, seed: int, name: str) -> Any:
  """Trains `params` with Adam on batches sampled from in-memory `arrays`; logs progress ~10 times.

  Args:
    loss_fn: (params, batch) -> scalar loss.
    params: initial parameters.
    arrays: equally long numpy arrays; batches are rows of them.
  """
  tx = optax.adam(lr)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  n = len(next(iter(arrays.values())))
  sampler = EpochSampler(n, min(batch_size, n), seed)
  opt_state = tx.init(params)
  start, log_every = time.time(), max(1, steps // 10)
  with progress.bar(steps, name) as progress_bar:
    for s in range(steps):
      idx = sampler.indices(s)
      params, opt_state, loss = step(params, opt_state, {k: v[idx] for k, v in arrays.items()})
      progress_bar.update(1)
      preemption.check()
      if (s + 1) % log_every == 0 or s + 1 == steps:
        logging.info('[%s] step %d/%d  loss %.4f  %.1f steps/s', name, s + 1, steps, float(loss),
                     (s + 1) / (time.time() - start))
  return params
