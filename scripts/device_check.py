r"""The body of scripts/device_check.sh (run that): tests, benchmarks and bounded training on the accelerator.

  python scripts/device_check.py --out=DIR --start=EPOCH_SECONDS --seconds=480 --install='...' --data=PATH

Writes DIR/device_check.json after every part, so that a run cut short still leaves its figures:
  machine      the backend, devices, versions and the install step's outcome.
  tests        pytest on the device: the train step (and 1 vs all devices where there are several), mixed
               precision, the MFCC vs librosa, stop-and-resume; each test's outcome, pytest's summary line, seconds.
  benchmarks   `python -m benchmarks.run` at the paper size, aux config, ceiling and train-step sections only, in
               float32 and in bfloat16: examples/s, compile time, fraction of the measured matmul ceiling, memory.
  train        `scripts/gpu_train.py` (the package's training and evaluation, from the exported data file) of the
               default config's generator at its size (harmonic:small) and of the paper config (wavegan:paper), or
               of --runs, for what the budget leaves: steps/s and the learned measures; --train_args passes
               gpu_train.py's options (shared stages, a photo set's faces file, overrides).
  skipped      each part not run and why (a CPU backend skips tests, benchmarks and training; --skip, e.g. to
               give a short loan's time to training with scripts/gpu_train.py's options).
Every part runs in a child process with a timeout inside the budget; a failing part is recorded, not fatal.
"""

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pytest selections: the CPU-only variant of the multi-device test (it forces JAX_PLATFORMS=cpu) is left out; its
# accelerator variant, test_all_devices_and_one_device_give_the_same_parameters, skips itself on one device.
TESTS = ('tests/test_train_step.py', 'tests/test_mixed_precision.py', 'tests/audio/test_mfcc.py',
         'tests/test_train.py::test_stop_and_resume_gives_the_same_parameters_as_an_uninterrupted_run')
TEST_FILTER = 'not eight_devices and not lowers_the_metric_loss'
TEST_SECONDS = 120
BENCHMARK_SECONDS = 120
BENCHMARK_SIZE = 'paper'
TRAIN_RUNS = ('harmonic:small', 'wavegan:paper')  # The default config (small: harmonic) and the paper config.
TRAIN_MEASURE_SECONDS = 60  # gpu_train.py's reserve per run for evaluating after training.
MARGIN_SECONDS = 15


class Budget:
  """Seconds left before `start + seconds` (epoch seconds), less a margin for writing the results."""

  def __init__(self, start: float, seconds: float):
    self.start, self.end = start, start + seconds - MARGIN_SECONDS

  def left(self) -> float:
    return self.end - time.time()


def _run(args: list[str], timeout: float, log_path: str) -> dict:
  """A child process with a timeout; its output goes to log_path. Returns exit status, seconds and output tail."""
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    try:
      code = subprocess.call(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
      code = 'timeout'
  with open(log_path) as log:
    tail = log.read()[-2000:]
  return {
      'command': ' '.join(args[1:]),
      'exit': code,
      'seconds': time.perf_counter() - start,
      'log': os.path.basename(log_path),
      **({
          'output_tail': tail
      } if code != 0 else {})
  }


def machine(install: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return {
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'devices': [str(d) for d in devices],
      'jax': jax.__version__,
      'python': platform.python_version(),
      'install': install
  }


def run_tests(out: str, budget: Budget) -> dict:
  """pytest -v on the device; each test's outcome is read from the log, so a run cut short still reports some."""
  result = _run([sys.executable, '-m', 'pytest', '-v', '-p', 'no:cacheprovider', *TESTS, '-k', TEST_FILTER],
                min(TEST_SECONDS, budget.left()), os.path.join(out, 'tests.log'))
  with open(os.path.join(out, 'tests.log')) as log:
    lines = log.read().splitlines()
  outcomes = [re.match(r'(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)', line) for line in lines]
  result['outcomes'] = {m.group(1): m.group(2) for m in outcomes if m}
  summaries = [line for line in lines if re.search(r'\d+ (passed|failed|error)', line)]
  result['summary'] = summaries[-1].strip('= ') if summaries else None
  return result


def run_benchmarks(out: str, budget: Budget) -> dict:
  results = {}
  for dtype in ('float32', 'bfloat16'):
    path = os.path.join(out, f'benchmark_{dtype}.json')
    timeout = min(BENCHMARK_SECONDS, budget.left())
    if timeout < 30:
      results[dtype] = {'skipped': 'budget'}
      continue
    r = _run([
        sys.executable, '-m', 'benchmarks.run', f'--sizes={BENCHMARK_SIZE}', '--configs=aux', f'--dtype={dtype}',
        '--train_step_only', '--matmul_size=8192', '--timed_steps=50', f'--out={path}'
    ], timeout, os.path.join(out, f'benchmark_{dtype}.log'))
    if r['exit'] == 0:
      with open(path) as f:
        r['results'] = json.load(f)
      os.remove(path)
    results[dtype] = r
  return results


def run_training(out: str, data: str, budget: Budget, runs: tuple[str, ...] = TRAIN_RUNS,
                 train_args: tuple[str, ...] = ()) -> dict:
  """gpu_train.py over `runs` (generator:size each), sharing what the budget leaves; `train_args` are its options
  (e.g. --stages, --photos, --set: scripts/gpu_train.py)."""
  seconds = budget.left()
  # gpu_train.py keeps this much after each run's training for its evaluation, twice that with a photo set.
  measure = TRAIN_MEASURE_SECONDS * (2 if any(a.startswith('--photos') for a in train_args) else 1)
  per_run = (seconds - 10) / len(runs) - measure
  if per_run < 20:
    return {'skipped': f'budget ({seconds:.0f} s left)'}
  train_out = os.path.join(out, 'train')
  specs = ','.join(f'{spec}:{per_run:.0f}' for spec in runs)
  r = _run([
      sys.executable, 'scripts/gpu_train.py', f'--data={data}', f'--out={train_out}', f'--runs={specs}',
      f'--deadline={seconds - 10:.0f}', *train_args
  ], seconds, os.path.join(out, 'train.log'))
  results_path = os.path.join(train_out, 'results.json')
  if os.path.exists(results_path):
    with open(results_path) as f:
      r['results'] = json.load(f)
  return r


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--start', type=float, default=None, help='epoch seconds the budget counts from (now)')
  parser.add_argument('--seconds', type=float, default=480, help='the whole run\'s budget')
  parser.add_argument('--install', default='not run', help='the install step\'s outcome, for the record')
  parser.add_argument('--data', default=os.path.join('.devdata', 'data.npz'), help='face2music export_data\'s file')
  parser.add_argument('--skip', default='', help='comma-separated parts not to run: tests, benchmarks, train')
  parser.add_argument('--runs', default=','.join(TRAIN_RUNS), help='the training runs, generator:size,...')
  parser.add_argument(
      '--train_args', default='', help='options of scripts/gpu_train.py for every run (one string, '
      'split as a shell would: --stages=DIR --photos=FILE --set=field=value ...)')
  args = parser.parse_args()
  skip = set(filter(None, args.skip.split(',')))
  if skip - {'tests', 'benchmarks', 'train'}:
    parser.error(f'--skip names parts of tests, benchmarks, train: {args.skip}')
  runs = tuple(args.runs.split(','))
  if not all(re.fullmatch(r'[a-z]+:[a-z]+', run) for run in runs):
    parser.error(f'--runs takes generator:size,... (the seconds are the budget\'s): {args.runs}')
  try:
    train_args = tuple(shlex.split(args.train_args))
  except ValueError as e:
    parser.error(f'--train_args: {e}')
  budget = Budget(args.start or time.time(), args.seconds)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'device_check.json')
  results = {'budget_seconds': args.seconds, 'machine': machine(args.install), 'skipped': {}}

  def write():
    results['seconds'] = time.time() - budget.start
    with open(path, 'w') as f:
      json.dump(results, f, indent=1, default=float)

  write()
  backend = results['machine']['backend']
  if backend == 'cpu':
    reason = 'the JAX backend is the CPU: no accelerator to check'
    results['skipped'] = {part: reason for part in ('tests', 'benchmarks', 'train')}
  else:
    results['skipped'] = dict.fromkeys(sorted(skip), 'skipped (--skip)')
    if 'tests' not in skip:
      results['tests'] = run_tests(out, budget)
      write()
    if 'benchmarks' not in skip:
      results['benchmarks'] = run_benchmarks(out, budget)
      write()
    data = os.path.abspath(args.data)
    if 'train' in skip:
      pass
    elif os.path.exists(data):
      results['train'] = run_training(out, data, budget, runs, train_args)
    else:
      results['skipped']['train'] = (f'no exported data at {args.data} (make it here: face2music export_data '
                                     '--config=aux --out=.devdata/data.npz)')
  write()
  print(f'Wrote {path}')


if __name__ == '__main__':
  main()
