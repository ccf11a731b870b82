r"""Exports a config's data (notes and face embeddings, with the face images) to one .npz file that training and
evaluation read without TensorFlow, TFDS or dlib (data/exported.py), e.g. on an accelerator machine.

  face2music export_data --config=aux --out=/tmp/aux_small_data.npz     # builds the embedded data if missing
  face2music train --config=aux --config.data.exported=/tmp/aux_small_data.npz --workdir=/tmp/aux
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from face2music_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config: a name (baseline, metric, aux; :tiny, :small or :paper for a size) or a config file.',
    lock_config=True)
flags.DEFINE_string('out', None, 'The .npz file to write (replaced).')
flags.mark_flags_as_required(['config', 'out'])


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  import os

  from face2music_jax import config_lib
  from face2music_jax import files
  from face2music_jax import stages
  from face2music_jax.data import exported
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  config = config_lib.validate(FLAGS.config)
  # Before the data are built or read (minutes): an --out that cannot be written fails at once.
  files.check_writable(os.path.dirname(os.path.abspath(FLAGS.out)), 'directory of --out')
  stages.ensure_data(config)
  out = exported.export(config, FLAGS.out)
  print(f'Wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB): train from it with '
        f'--config.data.exported={out}')


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
