"""scripts/install.sh's arguments and scripts/device_check.sh end to end on the CPU (device parts skipped)."""

import json
import os
import subprocess

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
