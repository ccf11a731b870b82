r"""Evaluates a trained face2music_jax model: metrics JSON, figures and an HTML page in <workdir>/eval/.

  python run_eval.py --config=configs/aux.py                      # the config's default workdir
  python run_eval.py --workdir=/ckpt/aux                          # the config that training wrote there
  python run_eval.py --config=configs/aux.py:tiny --workdir=/tmp/x --overwrite
"""

import json

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from face2music_jax import cli
from face2music_jax import evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/aux.py or configs/aux.py:tiny '
    '(default: <workdir>/config.json).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory of the trained model (default: config.workdir).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing <workdir>/eval/.')


@cli.reports_known_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  config, workdir = cli.config_and_workdir(FLAGS.config, FLAGS.workdir)
  logging.info('Config %s (%s), workdir %s', config.name, config.size, workdir)
  summary = evaluate.evaluate(config, workdir, overwrite=FLAGS.overwrite)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
