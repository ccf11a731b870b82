r"""Runs the whole experiment of the paper's Table 1: configs x seeds, each trained and evaluated, into one table.

  face2music experiment                                   # baseline, metric, aux x seeds 0, 1, 2, size small
  face2music experiment --readme=README.md                # and write the table into the README's results
  face2music experiment --size=tiny --seeds=0,1 --set=train.num_steps=8 --experiment_dir=/tmp/e \
      --results_dir=/tmp/results
  face2music experiment --merge=a/table1.json,b/table1.json --readme=README.md   # an experiment run in parts

Resumable: rerun the same command after an interruption; finished cells are skipped, an unfinished one resumes
from its last checkpoint. Writes <results_dir>/table1.json and table1.md (the cells: face2music_jax/experiment.py;
the table: face2music_jax/table.py). --merge trains nothing: it joins the tables of runs of other configs or seeds
(same size, overrides and stages; a cell in several is taken from the last) into one, which says where each cell
came from.
Exit codes as face2music train: 0 done, 2 a known error, 3 stopped by SIGTERM (rerun to go on).
"""

import os

from absl import app
from absl import flags
from absl import logging

from face2music_jax import cli
from face2music_jax import configs
from face2music_jax import preemption
from face2music_jax.configs import default

FLAGS = flags.FLAGS
flags.DEFINE_list('configs', list(configs.NAMES), 'Configs (face2music_jax/configs/<name>.py) to run.')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds to run each config with.')
flags.DEFINE_enum('size', 'small', default.SIZES, 'Config size of every cell.')
flags.DEFINE_multi_string('set', [], 'field=value override for every cell, e.g. --set=train.num_steps=2000.')
flags.DEFINE_string('experiment_dir', None, 'Where the cells are trained (default: '
                    '$FACE2MUSIC_CACHE/work/experiment_<size>).')
flags.DEFINE_string('results_dir', 'results', 'Where table1.json and table1.md go.')
flags.DEFINE_string('readme', None, 'Also write the table into this README, between its table1 markers.')
flags.DEFINE_list('merge', [], 'table1.json files to merge into one table (nothing is trained).')


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (--help answers at once)
  from face2music_jax import experiment
  from face2music_jax import table as table_lib
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    seeds = tuple(int(s) for s in FLAGS.seeds)
  except ValueError as e:
    raise app.UsageError(f'--seeds must be integers, got {FLAGS.seeds}') from e
  if FLAGS.merge:
    table = experiment.merge(FLAGS.merge, FLAGS.results_dir, FLAGS.readme)
    print(table_lib.to_markdown(table))
    return
  with preemption.handling_sigterm():
    cli.quiet_library_logs()
    experiment_dir = FLAGS.experiment_dir or os.path.join(default.cache_root(), 'work', f'experiment_{FLAGS.size}')
    overrides = dict(experiment.parse_override(text) for text in FLAGS.set)
    table = experiment.run(tuple(FLAGS.configs), seeds, FLAGS.size, experiment_dir, FLAGS.results_dir, overrides,
                           FLAGS.readme)
  logging.info('Done: %s', os.path.join(FLAGS.results_dir, 'table1.md'))
  print(table_lib.to_markdown(table))


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
