r"""Trains face2music_jax: prerequisite stages when missing, then the GAN.

  face2music train --config=aux              # small model on the embedded default data
  face2music train --config=metric:paper --workdir=/ckpt/metric --config.train.batch_size=64
  # several hosts (e.g. 2 processes on one machine):
  face2music train --config=aux --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0

Exit codes: 0 done, 2 a known error (one line `Error: ...`), 3 stopped by SIGTERM before the last step after saving
a checkpoint (rerun to resume), 1 anything else.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from face2music_jax import cli
from face2music_jax import preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config: a name (baseline, metric, aux; :tiny, :small or :paper for a size) or a config file.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory (default: config.workdir).')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0, for multi-process runs.')
flags.DEFINE_integer('num_processes', 0, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', -1, 'Index of this process in a multi-process run.')
flags.DEFINE_integer(
    'heartbeat_timeout', 60, 'Multi-process runs: seconds without heartbeats after which a '
    'process counts as dead (killed or hung) and the others exit with an error instead of '
    "waiting for it (JAX's default is 100).")
flags.mark_flags_as_required(['config'])


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  from face2music_jax import parallel
  from face2music_jax import train
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with preemption.handling_sigterm():  # From the first moment; train.train handles it in its own way.
    cli.quiet_library_logs()
    parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                          heartbeat_timeout=FLAGS.heartbeat_timeout)
    config = FLAGS.config
    workdir = FLAGS.workdir or config.workdir
    logging.info('Config %s (%s), workdir %s', config.name, config.size, workdir)
    with parallel.exit_at_once_on_error():
      train.train(config, workdir)
  logging.info('Done: checkpoints, TensorBoard logs, metrics.jsonl and samples/ are in %s', workdir)


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
