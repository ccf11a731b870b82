"""scripts/install.sh's arguments and scripts/device_check.sh end to end on the CPU (device parts skipped)."""

import json
import os
import shlex
import subprocess
import sys

import pytest

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _install_commands(tmp_path, *args) -> tuple[int, list[str]]:
  """Runs install.sh with a stand-in `python` that records its arguments instead of installing anything."""
  bin_dir, record = tmp_path / 'bin', tmp_path / 'calls'
  bin_dir.mkdir(exist_ok=True)
  fake = bin_dir / 'python'
  fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
  fake.chmod(0o755)
  if record.exists():
    record.unlink()
  proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'install.sh'), *args], capture_output=True, text=True,
                        env=dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}'), timeout=60)
  return proc.returncode, record.read_text().splitlines() if record.exists() else []


def _pin() -> str:
  with open(os.path.join(ROOT, 'setup.cfg')) as f:
    return next(line.split('==')[1].strip() for line in f if line.strip().startswith('jax[cpu]=='))


def test_install_script_cpu_path_is_unchanged_and_gpu_tpu_add_the_pinned_plugin(tmp_path):
  code, cpu = _install_commands(tmp_path)
  assert code == 0
  assert [c.split('--disable-pip-version-check ')[1] for c in cpu] == ['-e .', '--no-deps tinysoundfont==0.3.7']
  code, gpu = _install_commands(tmp_path, 'gpu')
  assert code == 0 and gpu[:2] == cpu
  assert gpu[2].endswith(f'jax[cuda12]=={_pin()}') and len(gpu) == 3
  code, tpu = _install_commands(tmp_path, 'tpu')
  assert code == 0 and tpu[:2] == cpu and tpu[2].endswith(f'jax[tpu]=={_pin()}') and len(tpu) == 3
  code, _ = _install_commands(tmp_path, 'cuda')
  assert code == 2


def test_device_check_on_the_cpu_skips_the_device_parts_and_writes_its_json(tmp_path):
  out = tmp_path / 'out'
  env = dict(os.environ, JAX_PLATFORMS='cpu', DEVICE_CHECK_INSTALL='0', OUT=str(out))
  proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'device_check.sh')], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((out / 'device_check.json').read_text())
  assert results['machine']['backend'] == 'cpu' and results['machine']['device_count'] >= 1
  assert results['machine']['install'].startswith('skipped')
  assert set(results['skipped']) == {'tests', 'benchmarks', 'train'}
  assert not {'tests', 'benchmarks', 'train'} & set(results)
  assert 0 < results['seconds'] < results['budget_seconds']
  assert f'Wrote {out / "device_check.json"}' in proc.stdout


def test_device_check_passes_its_runs_and_gpu_train_options_through_as_one_shell_string(tmp_path, monkeypatch):
  """DEVICE_CHECK_RUNS / DEVICE_CHECK_TRAIN_ARGS: device_check.sh hands each to device_check.py as one argument, and
  gpu_train.py gets each option whole (quoted values with spaces and commas too); the runs share the budget, less
  each one's evaluation (twice that with a photo set); malformed values stop it at once with exit code 2."""
  train_args = "--stages=s --photos=f.npz --set='notes.velocities=(75, 127)' --set=eval.num_translations=400"
  bin_dir, record = tmp_path / 'bin', tmp_path / 'calls'
  bin_dir.mkdir()
  (bin_dir / 'python').write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > {record}\n')
  (bin_dir / 'python').chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', DEVICE_CHECK_INSTALL='0',
             DEVICE_CHECK_RUNS='wavegan:paper', DEVICE_CHECK_TRAIN_ARGS=train_args)
  done = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'device_check.sh'),
                         str(tmp_path / 'out')], env=env, capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert {'--runs=wavegan:paper', f'--train_args={train_args}', '--skip='} <= set(record.read_text().splitlines())

  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location('device_check', os.path.join(ROOT, 'scripts', 'device_check.py'))
  device_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(device_check)
  calls = []
  monkeypatch.setattr(device_check, '_run', lambda args, timeout, log: calls.append(args) or {'exit': 0})
  budget = device_check.Budget(start=0, seconds=0)
  budget.left = lambda: 500.0
  device_check.run_training(str(tmp_path), 'd.npz', budget, ('wavegan:paper',), tuple(shlex.split(train_args)))
  (args,) = calls
  assert args[-4:] == [
      '--stages=s', '--photos=f.npz', '--set=notes.velocities=(75, 127)', '--set=eval.num_translations=400'
  ]
  assert f'--runs=wavegan:paper:{(500 - 10) - 2 * device_check.TRAIN_MEASURE_SECONDS:.0f}' in args
  calls.clear()
  device_check.run_training(str(tmp_path), 'd.npz', budget)  # The default runs, no photos.
  per_run = (500 - 10) / 2 - device_check.TRAIN_MEASURE_SECONDS
  assert f'--runs=harmonic:small:{per_run:.0f},wavegan:paper:{per_run:.0f}' in calls[0]
  for bad, message in (('--skip=tests,bogus', '--skip names parts of tests, benchmarks, train'),
                       ('--runs=wavegan:paper:240', '--runs takes generator:size'),
                       ("--train_args=--set='a=(1, 2)", '--train_args: No closing quotation')):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'device_check.py'), f'--out={tmp_path}', bad],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, (bad, done.stderr)
