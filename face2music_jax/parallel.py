"""Data parallelism over all devices of all hosts: one mesh axis 'data', batch sharded, state replicated.

The same code runs on one CPU, one GPU and a TPU pod: under `jax.jit` the batch-axis reductions in the losses
and in batch norm become all-reduces over the global batch.
"""

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                                 initialization_timeout: int = 300) -> None:
  """Calls `jax.distributed.initialize` when launched with several processes.

  With explicit arguments (as on CPU hosts, or several processes on 127.0.0.1) they are used; on a TPU pod or a
  SLURM/Open MPI cluster, JAX finds them itself when FACE2MUSIC_DISTRIBUTED=1 is set.
  """
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=initialization_timeout)
  elif os.environ.get('FACE2MUSIC_DISTRIBUTED') == '1':
    jax.distributed.initialize(initialization_timeout=initialization_timeout)
  else:
    return
  logging.info('Process %d of %d, %d local and %d global devices.', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis name 'data'.

  Auto axis type: XLA propagates shardings (GSPMD), so the models are written without sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch; fails clearly when it does not divide over the devices."""
  if global_batch_size % jax.device_count():
    raise ValueError(f'config.train.batch_size = {global_batch_size} must be divisible by the number of devices '
                     f'({jax.device_count()}).')
  return global_batch_size // jax.process_count()


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's local batch into global arrays sharded along 'data'."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def replicate(mesh: Mesh, tree):
  """Places a pytree of host values (identical on every process) replicated on all devices."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
                      tree)
