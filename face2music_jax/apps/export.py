r"""Exports a trained model as a bundle that `face2music translate --workdir=BUNDLE` and `Translator.load(BUNDLE)`
read: the generator, its config and a manifest (command, commit, seed, steps, measures, a SHA-256 per file).

  face2music export --workdir=~/.cache/face2music_jax/work/aux_small --out=my_model/
  face2music export --workdir=DIR --shipped      # replace the shipped model (face2music_jax/assets/default_model)
"""

import json

from absl import app
from absl import flags

from face2music_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Work directory of the trained model.')
flags.DEFINE_string('out', None, 'Directory of the bundle: new, empty or a bundle (replaced whole).')
flags.DEFINE_bool('shipped', False, "Write the bundle over the package's shipped model.")
flags.DEFINE_string('command', '', 'The command that trained the model, for the manifest.')
flags.mark_flags_as_required(['workdir'])


@cli.reports_known_errors
def main(argv):
  from face2music_jax import translator  # pylint: disable=import-outside-toplevel  (--help answers at once)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if bool(FLAGS.out) == FLAGS.shipped:
    raise app.UsageError('Pass --out=DIR or --shipped.')
  cli.quiet_library_logs()
  out = translator.DEFAULT_BUNDLE if FLAGS.shipped else FLAGS.out
  manifest = translator.export_bundle(FLAGS.workdir, out, command=FLAGS.command)
  print(json.dumps({k: manifest[k] for k in ('name', 'step', 'seed', 'sha256')}, indent=2))
  print(f'Wrote the model bundle {out}')


def run() -> None:
  """The command: flags -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
