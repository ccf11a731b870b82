"""Data parallelism over all devices of all hosts: one mesh axis 'data', batch sharded, state replicated.

The same code runs on one CPU, one GPU and a TPU pod: under `jax.jit` the batch-axis reductions in the losses
and in batch norm become all-reduces over the global batch.
"""

import contextlib
import os
import sys
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from face2music_jax import config_lib
from face2music_jax import preemption


def maybe_initialize_distributed(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                                 initialization_timeout: int = 300, heartbeat_timeout: int = 60) -> None:
  """Calls `jax.distributed.initialize` when launched with several processes.

  With explicit arguments (as on CPU hosts, or several processes on 127.0.0.1) they are used; on a TPU pod or a
  SLURM/Open MPI cluster, JAX finds them itself when FACE2MUSIC_DISTRIBUTED=1 is set.

  Args:
    coordinator_address: host:port of process 0; '' unless launched by hand with several processes.
    num_processes: number of processes.
    process_id: index of this process.
    initialization_timeout: seconds to wait for all processes to connect.
    heartbeat_timeout: seconds without a heartbeat after which the coordination service counts a process as dead
      (killed, or hung with its whole process stopped) and terminates all the others, so that none waits forever
      in a collective or barrier with it.
  """
  timeouts = {'initialization_timeout': initialization_timeout, 'heartbeat_timeout_seconds': heartbeat_timeout}
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **timeouts)
  elif os.environ.get('FACE2MUSIC_DISTRIBUTED') == '1':
    jax.distributed.initialize(**timeouts)
  else:
    return
  logging.info('Process %d of %d, %d local and %d global devices.', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


@contextlib.contextmanager
def exit_at_once_on_error() -> Iterator[None]:
  """In a multi-process run, an exception logs its traceback and ends this process at once with exit code 1.

  When another process dies, this one's next collective fails (gloo: connection reset). Left to propagate, the
  error would reach `jax.distributed.shutdown` at exit, whose barrier waits for the dead process until the
  heartbeat timeout and then aborts. Exiting at once also closes this process's connections, so that the others'
  collectives fail at once in turn. In a single-process run the exception propagates unchanged.
  """
  try:
    yield
  except Exception as e:  # Whatever stopped this process, the others must not wait for it.
    # A stop by SIGTERM (after saving, as the other processes were: a preemption stops them all) propagates.
    if jax.process_count() == 1 or preemption.stop_behind(e) is not None:
      raise
    logging.exception(
        'Process %d of %d stopped on an error (if it is a failed collective, another process died '
        'or hung: see its log). Exiting now, without waiting for the other processes.', jax.process_index(),
        jax.process_count())
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # Skips the shutdown barrier (see above).


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis name 'data'.

  Auto axis type: XLA propagates shardings (GSPMD), so the models are written without sharding annotations.
  """
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The train step's batches, [sub-batches, examples, ...]: examples sharded along 'data'."""
  return NamedSharding(mesh, P(None, 'data'))


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch (config.train.batch_size).

  Raises:
    config_lib.ConfigError: naming the field, when the batch does not divide over the devices.
  """
  if global_batch_size % jax.device_count():
    raise config_lib.ConfigError(f'config.train.batch_size = {global_batch_size} is invalid: expected a multiple of '
                                 f'the number of devices ({jax.device_count()}).')
  return global_batch_size // jax.process_count()


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's local train-step batch [sub-batches, local examples, ...] into global arrays whose
  examples (axis 1) are sharded along 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def replicate(mesh: Mesh, tree):
  """Places a pytree of host values (identical on every process) replicated on all devices."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
                      tree)
