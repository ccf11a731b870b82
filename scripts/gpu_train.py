r"""Trains and evaluates the GAN on an accelerator machine that has JAX but not TensorFlow, TFDS or dlib, through the
package itself (train.train, evaluate.evaluate), reading the data from an exported file.

  # here (the full install): the data of the config (the sizes do not change the data)
  face2music export_data --config=aux --out=.devdata/data.npz
  # there: each run trains its stages and the GAN for at most its seconds (then stops as on SIGTERM, with a
  # checkpoint), and is evaluated
  python scripts/gpu_train.py --data=.devdata/data.npz --out=$OUT \
      --runs='wavegan:paper:240,wavegan:paper:120:model.wavegan.upsample=nearest;train.g_lr=2e-4'

Each run is `generator:size:seconds[:field=value;...]` (config overrides, values as Python literals) of the `aux`
config; `--set=field=value` (repeatable) overrides a field in every run, also with values that hold commas. Writes
OUT/<run>/ (the work directory: checkpoints, timing.json, eval/ with its page and WAVs) and OUT/results.json
(device, versions, per run: steps, steps/s from timing.json, the evaluation's measures).

To judge the runs with the yardsticks of a run made here (its audio embedding phi, classifiers and statistics, as the
cells of a Table 1 experiment share them) and on the faces of a folder of photos:

  # here: the faces of the photos (face2music export_data --photos needs dlib; the accelerator machine does not)
  face2music export_data --config=aux --photos=my_photos/ --out=.devdata/photo_faces.npz
  # there: each run starts with copies of the experiment's shared stages; the yardsticks' fields set to theirs
  python scripts/gpu_train.py --data=.devdata/data.npz --out=$OUT --runs=wavegan:paper:240 \
      --stages=.devdata/shared --photos=.devdata/photo_faces.npz \
      --set='notes.velocities=(75, 127)' --set=model.audio_embedding_channels=16 ...

With --photos each run is also judged on those faces (`face2music eval --photos`): OUT/<run>/eval_photos/ and the
measures in results.json.
"""

import argparse
import json
import os
import platform
import signal
import sys
import threading
import time

_STARTED = time.time()  # --deadline counts from here, before the heavy imports.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax

from face2music_jax import config_lib
from face2music_jax import evaluate
from face2music_jax import experiment
from face2music_jax import jax_cache
from face2music_jax import preemption
from face2music_jax import train
from face2music_jax.configs import aux
from face2music_jax.data import exported
from face2music_jax.evaluators import photos as photos_lib

_MEASURE_RESERVE = 60  # Seconds kept free after each run's training for its evaluation (and again for photos).


def parse_run(spec: str) -> tuple[str, str, float, dict[str, object]]:
  """'generator:size:seconds[:field=value;...]' -> its parts (values parsed as Python literals).

  Raises:
    ValueError: a spec of another form (config_lib.ConfigError, a ValueError, for an override without '=').
  """
  generator, size, seconds, *rest = spec.split(':', 3)
  overrides = dict(experiment.parse_override(item) for item in filter(None, (rest[0] if rest else '').split(';')))
  return generator, size, float(seconds), overrides


def run_config(data: str, generator: str, size: str, overrides: dict[str, object], workdir: str):
  config = aux.get_config(size)
  config.model.generator = generator
  config.data.exported = os.path.abspath(data)
  config.workdir = workdir
  config.train.log_every = 100
  for field, value in overrides.items():
    config_lib.set_field(config, field, value)
  return config_lib.validate(config)


def _train_for(config, workdir: str, seconds: float) -> bool:
  """Trains at most `seconds` (a SIGTERM then stops it, with a checkpoint, as a preempted run); whether it
  reached config.train.num_steps."""
  timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
  timer.start()
  try:
    train.train(config, workdir)
    return True
  except BaseException as e:
    if preemption.stop_behind(e) is None:
      raise
    return False
  finally:
    timer.cancel()


def run(data: str, out: str, runs: str, deadline_seconds: float = 0, common: dict[str, object] | None = None,
        stages: str | None = None, photos: str | None = None) -> dict:
  """Trains and evaluates each run of `runs` (module docstring); writes out/results.json after each.

  Args:
    data: the exported data file.
    out: the output directory.
    runs: comma-separated run specs.
    deadline_seconds: end everything within this many seconds (0: no deadline).
    common: config overrides of every run (before each run's own).
    stages: a directory of stage artefacts (an experiment's shared/) that every run starts with a copy of.
    photos: a faces file (face2music export_data --photos) every run is also judged on.
  """
  reserve = _MEASURE_RESERVE * (2 if photos else 1)
  end = _STARTED + deadline_seconds if deadline_seconds else float('inf')
  jax_cache.enable(os.path.join(out, 'jax_cache'))
  import flax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  results = {
      'device': str(jax.devices()[0].device_kind),
      'platform': jax.devices()[0].platform,
      'device_count': jax.device_count(),
      'python': platform.python_version(),
      'versions': {
          'jax': jax.__version__,
          'flax': flax.__version__,
          'optax': optax.__version__
      },
      'runs': []
  }
  for i, spec in enumerate(runs.split(',')):
    generator, size, seconds, overrides = parse_run(spec)
    seconds = min(seconds, end - time.time() - reserve)
    if seconds < 20:
      results['runs'].append({'spec': spec, 'skipped': 'deadline'})
      continue
    workdir = os.path.join(out, f'run{i}_{generator}_{size}')
    config = run_config(data, generator, size, {**(common or {}), **overrides}, workdir)
    if stages:
      experiment.copy_artefacts(stages, workdir)
    print(f'{spec}: training for at most {seconds:.0f} s on {results["device"]}', flush=True)
    completed = _train_for(config, workdir, seconds)
    record = {
        'spec': spec,
        'generator': generator,
        'size': size,
        'overrides': {
            **(common or {}),
            **overrides
        },
        'completed': completed
    }
    timing_path = os.path.join(workdir, 'timing.json')
    if os.path.exists(timing_path):
      with open(timing_path) as f:
        timing = json.load(f)
      steps = timing['end_step'] - timing['start_step']
      record['timing'] = {**timing, 'steps_per_second': steps / max(timing['seconds'].get('train steps', 0), 1e-9)}
    try:
      summary = evaluate.evaluate(config, workdir, overwrite=True)
      record['measures'] = {
          'step': summary['checkpoint_step'],
          'metrics': summary['metrics'],
          'translations': summary['listening']['rows']['translations']
      }
    except Exception as e:  # pylint: disable=broad-except  (recorded: the next run still runs)
      record['error'] = f'{type(e).__name__}: {e}'
    if photos:
      _write_results(out, {**results, 'runs': results['runs'] + [record]})  # Kept if the photos' judging is cut.
      try:
        summary = photos_lib.evaluate_photos(config, workdir, photos, os.path.join(workdir, 'eval_photos'))
        record['photos'] = {
            k: summary[k] for k in ('num_faces', 'headline', 'per_pitch', 'families_classifier',
                                   'real_families_classifier', 'closest_pair', 'seconds')
        }
      except Exception as e:  # pylint: disable=broad-except
        record['photos_error'] = f'{type(e).__name__}: {e}'
    results['runs'].append(record)
    _write_results(out, results)
  _write_results(out, results)
  return results


def _write_results(out: str, results: dict) -> None:
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, default=float)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True, help='the exported data file (face2music export_data)')
  parser.add_argument('--out', required=True)
  parser.add_argument('--runs', default='wavegan:paper:240,harmonic:paper:120',
                      help='comma-separated generator:size:seconds[:field=value;...]')
  parser.add_argument('--deadline', type=float, default=0,
                      help='end everything within this many seconds of the start (0 = none)')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='a config override of every run (repeatable; values as Python literals)')
  parser.add_argument(
      '--stages', help='a directory of stage artefacts (audio_embedding, classifiers, '
      'statistics.json: an experiment\'s shared/) each run starts with')
  parser.add_argument('--photos', help='a faces file (face2music export_data --photos=DIR) each run is judged on')
  args = parser.parse_args()
  for path, what in ((args.data, 'file'), (args.photos, 'file'), (args.stages, 'dir')):
    if path and not (os.path.isfile(path) if what == 'file' else os.path.isdir(path)):
      parser.error(f'no such {what}: {path}')
  if args.stages:
    missing = [a for a in experiment.SHARED_ARTEFACTS if not os.path.exists(os.path.join(args.stages, a))]
    if missing:
      parser.error(f'--stages={args.stages} lacks {", ".join(missing)} (an experiment\'s shared/ has them)')
  try:  # Every run's config, before any trains: a bad spec or field fails here, not after an hour.
    common = dict(map(experiment.parse_override, args.set))
    for spec in args.runs.split(','):
      generator, size, _, overrides = parse_run(spec)
      config = run_config(args.data, generator, size, {**common, **overrides}, os.path.join(args.out, 'check'))
      exported.ExportedInputs(config)  # The data file is of this config's data (ExportError names each field).
    if args.photos:
      photos_lib.load_faces(args.photos)  # A faces file (PhotoFacesError says what is wrong).
  except (ValueError, KeyError, AttributeError, TypeError) as e:
    parser.error(f'{type(e).__name__}: {e}')
  os.makedirs(args.out, exist_ok=True)
  run(args.data, args.out, args.runs, args.deadline, common, args.stages, args.photos)


if __name__ == '__main__':
  main()
