"""The benchmark command at the tiny size: it runs every section and writes a complete JSON (no timing asserts),
from an exported data file in a process that cannot import TensorFlow (as on the accelerator machines)."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_benchmark_command_writes_every_section(tiny_data_dir, tiny_exported, tmp_path):
  out = tmp_path / 'bench' / 'results.json'
  argv = [
      'benchmarks.run', '--sizes=tiny', '--configs=aux', '--default_size=tiny', f'--data_dir={tiny_data_dir}',
      f'--exported={tiny_exported}', f'--out={out}', '--matmul_size=128', '--repeats=2', '--timed_steps=2',
      '--mfcc_batch=4', '--metric_batches=8,16', '--pipeline_batches=5', '--rss_steps=2', '--eval_translations=12'
  ]
  # `python -m benchmarks.run ...` where TensorFlow, TFDS and dlib cannot be imported.
  code = helpers.BLOCK_TENSORFLOW + (f'import runpy\nsys.argv = {argv!r}\n'
                                     'runpy.run_module("benchmarks.run", run_name="__main__", alter_sys=True)\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(out.read_text())

  assert _positive(results['ceiling']['flops_per_second'])
  steps = results['train_step']['tiny']
  assert set(steps) == {'aux'}  # One config: each compiles its step (30 s here), and the code is the same.
  r = steps['aux']
  assert r['batch_size'] == 8
  for key in ('examples_per_second', 'compile_seconds', 'gflops_per_step', 'fraction_of_ceiling'):
    assert _positive(r[key]), (key, r)
  profile = results['step_profile']['tiny']
  assert all(_positive(p['seconds']) and _positive(p['gflops']) for p in profile.values())
  # The step holds G's forward and backward pass and D's update, and more (phi, A, D's input gradient).
  parts = profile['generator_forward_backward']['gflops'] + profile['discriminator_update_forward_backward_2B']['gflops']
  assert r['gflops_per_step'] > parts, (r, profile)

  mfcc = results['mfcc']
  assert mfcc['batch_size'] == 4 and mfcc['max_relative_error'] < 1e-3 and _positive(mfcc['speedup_vs_librosa'])
  # The PyTorch peer computes the same notes (its cumulative-sum phases in float32 drift by up to ~3e-4 of the peak
  # at the small size's 64 harmonics).
  synthesizer = results['synthesizer']
  assert 'skipped' not in synthesizer, synthesizer  # torch is a test dependency (scripts/install.sh test).
  assert synthesizer['batch_size'] == 8 and _positive(synthesizer['speedup_vs_torch']), synthesizer
  assert synthesizer['max_difference_of_peak'] < 1e-3, synthesizer
  assert synthesizer['max_gradient_difference_of_largest'] < 1e-3, synthesizer
  assert [r['batch_size'] for r in results['metric_loss']] == [8, 16]
  assert set(results['metric_loss'][0]['share_of_aux_step']) == {'tiny'}  # The tiny aux step has batch 8.
  assert results['metric_loss'][1]['pairs'] == 16 * 15 // 2
  pipeline = results['input_pipeline']
  assert _positive(pipeline['examples_per_second']) and _positive(pipeline['pipeline_to_step_ratio'])
  assert f'--config.data.exported={tiny_exported}' in results['default_run']['command']
  assert results['default_run']['steps'] == 2 and 0.1 < results['default_run']['peak_rss_gib'] < 24
  evaluation = results['evaluation']
  assert evaluation['num_translations'] == 12 and _positive(evaluation['seconds'])
  assert evaluation['listening']['clips'] > 0 and 0 <= evaluation['listening']['in_tune_50c'] <= 1
  metrics = json.loads((tmp_path / 'bench' / 'default_run' / 'eval' / 'metrics.json').read_text())
  assert metrics['num_translations'] == 12 and metrics['checkpoint_step'] == 2
  assert 'train step' in proc.stdout and 'MFCC, 4 notes' in proc.stdout and 'PyTorch DDSP-style' in proc.stdout


def test_an_unreadable_exported_file_is_one_error_before_any_section(tmp_path):
  bad = tmp_path / 'notes.npz'
  bad.write_bytes(b'not a zip file')
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.run', f'--exported={bad}', f'--out={tmp_path / "r.json"}'],
                        cwd=ROOT, env=dict(os.environ,
                                           JAX_PLATFORMS='cpu'), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith('Error:')]
  assert str(bad) in line and 'export it again with face2music export_data' in line
  assert 'Ceiling' not in proc.stderr and not (tmp_path / 'r.json').exists()
