"""The experiment command (configs x seeds -> results/table1.json): interrupted and rerun, it resumes and trains no
cell twice; its JSON has the documented schema; the README block is written from it. (The table from cell
records alone: test_table.py.)"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from face2music_jax import config_lib
from face2music_jax import experiment
from face2music_jax import table as table_lib
from face2music_jax import workdir as workdir_lib

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _command(tiny_exported: str, tmp_path, *extra: str) -> list[str]:
  return [
      sys.executable,
      os.path.join(ROOT, 'run_experiment.py'), '--size=tiny', '--seeds=0,1', '--configs=baseline,aux',
      f'--set=data.exported={tiny_exported!r}', f'--set=train.num_steps={STEPS}', '--set=train.checkpoint_every=2',
      f'--experiment_dir={tmp_path / "experiment"}', f'--results_dir={tmp_path / "results"}', *extra
  ]


def test_an_interrupted_experiment_resumes_trains_no_cell_twice_and_writes_its_table(tiny_exported, tmp_path):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  experiment_dir = tmp_path / 'experiment'
  first_cell = experiment_dir / 'baseline_seed0'
  log = open(tmp_path / 'first.log', 'w')
  process = subprocess.Popen(_command(tiny_exported, tmp_path), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 1800
  while not (first_cell / experiment.CELL_FILE).exists():
    assert process.poll() is None, open(tmp_path / 'first.log').read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)  # While the second cell starts.
  assert process.wait(timeout=900) == 3, open(tmp_path / 'first.log').read()[-3000:]
  with open(tmp_path / 'results' / 'table1.json') as f:  # The table so far: the first cell.
    partial = json.load(f)
  assert not partial['complete'] and [c['cell'] for c in partial['cells']] == ['baseline_seed0']
  assert 'Partial: 1 of 4 cells' in (tmp_path / 'results' / 'table1.md').read_text()
  first_mtime = os.path.getmtime(first_cell / experiment.CELL_FILE)

  readme = tmp_path / 'README.md'
  readme.write_text(f'# Results\n{table_lib.README_BEGIN}\nold table\n{table_lib.README_END}\nafter\n')
  rerun = subprocess.run(_command(tiny_exported, tmp_path, f'--readme={readme}'), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=2400)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'baseline_seed0: finished earlier, skipped' in rerun.stderr
  assert os.path.getmtime(first_cell / experiment.CELL_FILE) == first_mtime

  # No cell trained twice: per cell, one 'trained' event; an interrupted one resumed where it stopped.
  events = experiment.read_events(str(experiment_dir))
  cells = ['baseline_seed0', 'aux_seed0', 'baseline_seed1', 'aux_seed1']
  for cell in cells:
    spans = [
        (e['from_step'], e['to_step']) for e in events if e.get('cell') == cell and e['event'] in ('trained', 'stopped')
    ]
    assert [e['event'] for e in events if e.get('cell') == cell and e['event'] == 'trained'] == ['trained'], cell
    assert spans[0][0] == 0 and spans[-1][1] == STEPS, (cell, spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), (cell, spans)  # Resumed where it stopped.
    with open(experiment_dir / cell / 'metrics.jsonl') as f:
      steps = [json.loads(line)['step'] for line in f]
    assert len(steps) == len(set(steps)) and max(steps) == STEPS, (cell, steps)
  assert [e['event'] for e in events if e.get('cell') == 'baseline_seed0'] == ['trained', 'evaluated']

  with open(tmp_path / 'results' / 'table1.json') as f:
    table = json.load(f)
  assert table['schema_version'] == table_lib.SCHEMA_VERSION and table['complete']
  assert (table['configs'], table['seeds'], table['size']) == (['baseline', 'aux'], [0, 1], 'tiny')
  assert [c['cell'] for c in table['cells']] == cells
  generator = experiment.cell_config('aux', 'tiny', 0, {}, str(tmp_path)).model.generator
  for cell in table['cells']:
    assert cell['steps'] == STEPS and cell['generator'] == generator
    assert set(cell['measures']) == {key for key, *_ in table_lib.COLUMNS}
    assert set(cell['in_tune_per_pitch']) == {'48', '60'}
    assert cell['classifiers'] == {
        'pitch': table['classifiers']['pitch_test_accuracy'],
        'family': table['classifiers']['family_test_accuracy']
    }
    assert cell['seconds']['train'] > 0 and cell['seconds']['eval'] > 0
  for config in ('baseline', 'aux'):
    fid = table['summary'][config]['fid_pitch']
    assert fid['n'] == 2 and fid['mean'] == pytest.approx(sum(fid['values']) / 2)
  assert set(table['reference_rows']) == {'real_train_notes', 'real_test_notes', 'white_noise', 'harmonic_tone'}
  assert table['reference_rows']['harmonic_tone']['in_tune_50c'] == 1.0
  assert table['reference_rows']['white_noise']['in_tune_50c'] <= 0.2
  comparison = next(c for c in table['comparisons'] if (c['a'], c['b']) == ('aux', 'baseline'))
  assert comparison['ci95'][0] <= comparison['difference'] <= comparison['ci95'][1]
  assert comparison['verdict'] in ('holds', 'contradicted', 'the seeds cannot decide')
  assert table['wall_seconds']['total'] >= sum(sum(c['seconds'].values()) for c in table['cells']) - 1
  assert table['versions']['jax'] and table['machine']['cpu_count'] >= 1
  markdown = (tmp_path / 'results' / 'table1.md').read_text()
  assert '| **baseline** | 0,1 |' in markdown and '| **aux** | 0,1 |' in markdown
  assert 'white noise (reference)' in markdown and 'IS pitch (max 13)' in markdown
  text = readme.read_text()
  assert 'old table' not in text and markdown in text and text.endswith(f'{table_lib.README_END}\nafter\n')


def test_bad_experiment_arguments_name_the_problem(tmp_path):
  assert experiment.parse_override('train.num_steps=20') == ('train.num_steps', 20)
  assert experiment.parse_override('model.generator=wavegan') == ('model.generator', 'wavegan')
  with pytest.raises(config_lib.ConfigError, match='expected field=value'):
    experiment.parse_override('train.num_steps')
  with pytest.raises(config_lib.ConfigError, match='Unknown config .paper.'):
    experiment.cell_config('paper', 'tiny', 0, {}, str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match='no field train.num_stepz'):
    experiment.cell_config('aux', 'tiny', 0, {'train.num_stepz': 3}, str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match='train.num_steps'):  # Validated like any config.
    experiment.cell_config('aux', 'tiny', 0, {'train.num_steps': -1}, str(tmp_path))
  config = experiment.cell_config('metric', 'tiny', 2, {'train.num_steps': 7}, str(tmp_path))
  assert (config.name, config.seed, config.train.num_steps, config.workdir) == ('metric', 2, 7, str(tmp_path))


def test_the_shared_stages_of_another_config_are_set_aside_and_trained_again(tiny_exported, tmp_path):
  """Rerun after a change of the default beyond train.* (here phi's MFCC scale), an experiment directory trains its
  shared stages again instead of handing new cells the stages of the earlier config."""
  shared = str(tmp_path / 'experiment' / experiment.SHARED)
  config = experiment.cell_config('aux', 'tiny', 0, {'data.exported': tiny_exported}, shared)
  experiment.shared_stages(config)
  assert not any(name.endswith('stale-config') for name in os.listdir(shared))
  experiment.shared_stages(config)  # The same config: kept.
  assert not any(name.endswith('stale-config') for name in os.listdir(shared))
  config.audio_embedding.mfcc_scale = 'coefficient' if config.audio_embedding.mfcc_scale == 'pooled' else 'pooled'
  experiment.shared_stages(config)
  for name in experiment.SHARED_ARTEFACTS:
    assert os.path.exists(os.path.join(shared, f'{name}.stale-config')) and os.path.exists(os.path.join(shared, name))


def test_an_experiment_directory_with_a_cell_of_another_config_is_refused_before_any_work(tmp_path):
  """A finished cell is skipped, not retrained: had it been trained with another config (an earlier default), the new
  table would hold it unseen. The experiment refuses, naming the cell and the field."""
  experiment_dir = tmp_path / 'experiment'
  earlier = experiment.cell_config('aux', 'tiny', 0, {}, str(experiment_dir / experiment.cell_name('aux', 0)))
  earlier.audio_embedding.mfcc_scale = 'coefficient' if earlier.audio_embedding.mfcc_scale == 'pooled' else 'pooled'
  os.makedirs(earlier.workdir)
  workdir_lib.accept_run(earlier, earlier.workdir)  # As its training recorded it.
  with pytest.raises(workdir_lib.WorkdirError, match=r'aux_seed0 .*audio_embedding\.mfcc_scale'):
    experiment.run(('aux',), (0,), 'tiny', str(experiment_dir), str(tmp_path / 'results'))
  assert os.listdir(experiment_dir) == ['aux_seed0'] and not (tmp_path / 'results').exists()
