r"""Evaluates a trained face2music_jax model: metrics JSON, figures and an HTML page in <workdir>/eval/.

  face2music eval --config=aux                      # the config's default workdir
  face2music eval --workdir=/ckpt/aux                          # the config that training wrote there
  face2music eval --config=aux:tiny --workdir=/tmp/x --overwrite
  face2music eval --workdir=/ckpt/aux --photos=my_photos/       # every face of a folder of photos instead
  face2music eval --workdir=/ckpt/aux --photos=my_photos/ --model=shipped   # another model, judged with /ckpt/aux's phi
  face2music eval --workdir=/ckpt/aux --photos=faces.npz      # the faces file of a folder (export_data --photos)
  face2music eval --workdir=/ckpt/aux --step=3000              # an earlier kept checkpoint -> eval_step3000/
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from face2music_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config, e.g. aux, aux:tiny or a config file '
                                '(default: <workdir>/config.json).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory of the trained model (default: config.workdir).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing <workdir>/eval/ (or eval_photos/, eval_photos_<model>/).')
flags.DEFINE_string(
    'photos', None, 'A folder of photos: judge the model on every face in them (listening measures, '
    'distinctness, Pearson, families) into <workdir>/eval_photos/ (with --model: eval_photos_<its folder name>/) '
    'instead of the evaluation. Or the faces file of such a folder (face2music export_data --photos=DIR), which '
    'needs no face detector.')
flags.DEFINE_string(
    'model', None, 'With --photos: a model bundle (face2music export) or another training work directory, judged '
    'instead of the work directory\'s generator, or "shipped" for the shipped model; the work directory gives the '
    'yardsticks (phi, the real notes) and must have them.')

flags.DEFINE_integer(
    'step', None, 'Judge the kept checkpoint of this step (<workdir>/checkpoints/<step>) instead of the newest, into '
    '<workdir>/eval_step<step>/ (with --photos: eval_photos_step<step>/): how much the measures move between '
    'checkpoints of one run.')


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  from face2music_jax import evaluate
  from face2music_jax import preemption
  from face2music_jax import workdir as workdir_lib
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.model and not FLAGS.photos:
    raise app.UsageError('--model judges a bundle on a folder of photos: pass --photos too.')
  if FLAGS.model and FLAGS.step is not None:
    raise app.UsageError('--step names a checkpoint of the work directory\'s model: not with --model.')
  cli.quiet_library_logs()
  stopped = 'during the evaluation: stopped; nothing of it was written (its outputs are written whole at the end).'
  with preemption.handling_sigterm(stopped):
    config, workdir = cli.config_and_workdir(FLAGS.config, FLAGS.workdir)
    if not os.path.isdir(workdir):
      raise evaluate.EvaluationError(f'No work directory {workdir}: train a model there first (face2music train).')
    with workdir_lib.locked(workdir, workdir_lib.EVAL_LOCK_FILE):
      _evaluate(config, workdir)


def _evaluate(config, workdir: str) -> None:
  """The evaluation of the flags, under the stop handler and the evaluation lock."""
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  from face2music_jax import evaluate
  from face2music_jax.evaluators import photos
  logging.info('Config %s (%s), workdir %s', config.name, config.size, workdir)
  if FLAGS.photos:
    if FLAGS.model and not os.path.isdir(os.path.join(workdir, 'audio_embedding')):
      raise evaluate.EvaluationError(
          f'{workdir} has no trained audio embedding (audio_embedding/): --model judges a model with the yardsticks '
          'of a trained work directory; train one there first (face2music train).')
    name = os.path.basename(os.path.normpath(FLAGS.model)) if FLAGS.model else ''
    if FLAGS.step is not None:
      name = f'step{FLAGS.step}'
    out_dir = os.path.join(workdir, f'eval_photos_{name}' if name else 'eval_photos')
    if os.path.exists(out_dir) and not FLAGS.overwrite:
      raise evaluate.EvaluationError(f'{out_dir} exists already: pass --overwrite to replace it.')
    summary = photos.evaluate_photos(config, workdir, FLAGS.photos, out_dir, model=FLAGS.model, step=FLAGS.step)
    print(json.dumps(summary['headline'], indent=2))
    print(f'Wrote {out_dir}/metrics.json and {out_dir}/index.html')
    return
  summary = evaluate.evaluate(config, workdir, overwrite=FLAGS.overwrite, step=FLAGS.step)
  print(evaluate.human_summary(summary, evaluate.eval_dir(workdir, FLAGS.step)))


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
