"""Table 1 from cell records: each column read from an evaluation, mean +- sd over seeds, the comparisons, the
markdown and the README block; without JAX or training (experiment.py runs the cells)."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import table
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACHINE = {'cpu': 'a test CPU', 'cpu_count': 2, 'platform': 'test', 'devices': ['cpu'], 'num_devices': 1}


def _record(config: str, seed: int, value: float) -> dict:
  cell = f'{config}_seed{seed}'
  identity = ml_collections.ConfigDict({
      'name': config,
      'seed': seed,
      'size': 'tiny',
      'model': {
          'generator': 'harmonic'
      },
      'workdir': f'/e/{cell}'
  })
  return table.cell_record(cell, identity, helpers.eval_summary(value), {'train': 12.345, 'eval': 1.0})


def _info(complete: bool, num_cells: int) -> dict:
  """What experiment.py hands `table.build` about the experiment (a grid of baseline and aux x seeds 0, 1)."""
  return {
      'configs': ['baseline', 'aux'],
      'seeds': [0, 1],
      'size': 'tiny',
      'overrides': {},
      'experiment_dir': '/e',
      'complete': complete,
      'num_cells': num_cells
  }


def _table(complete: bool = True) -> dict:
  records = [
      _record(c, s, v) for c, s, v in (('baseline', 0, 2.0), ('aux', 0, 6.0), ('baseline', 1, 4.0), ('aux', 1, 10.0))
  ]
  events = [{
      'cell': 'shared',
      'event': 'stages',
      'seconds': 10.0
  }, {
      'cell': 'aux_seed0',
      'event': 'trained',
      'seconds': 100.0
  }, {
      'cell': 'aux_seed0',
      'event': 'evaluated',
      'seconds': 5.5
  }]
  return table.build(records, table.reference_rows(helpers.eval_summary(4.0)), {
      'pitch_test_accuracy': 0.9,
      'family_test_accuracy': 0.8
  }, events, _info(complete, 4 if complete else 6), machine=MACHINE, versions={'jax': None})


def test_a_cells_record_has_every_column_read_from_its_evaluation():
  record = _record('aux', 0, 4.0)
  assert record['measures'] == pytest.approx({
      'in_tune_50c': 0.4,
      'flatness': 4e-6,
      'rms': 0.04,
      'distinctness': 0.4,
      'fid_pitch': 4.0,
      'inception_score_pitch': 8.0,
      'fid_family': 12.0,
      'inception_score_family': 2.0,
      'pearson_correlation': 0.4,
      'silhouette_value': -0.04
  })
  assert list(record['measures']) == [c.key for c in table.COLUMNS]
  assert record['in_tune_per_pitch'] == pytest.approx({'36': 0.4, '60': 0.2})
  assert (record['cell'], record['config'], record['seed'], record['steps']) == ('aux_seed0', 'aux', 0, 8)
  assert record['classifiers'] == {'pitch': 0.9, 'family': 0.8}
  assert record['inception_score_max'] == {'pitch': 13, 'family': 4}
  assert record['seconds'] == {'train': 12.3, 'eval': 1.0}


def test_reference_rows_have_the_listening_columns_where_the_row_was_listened_to():
  rows = table.reference_rows(helpers.eval_summary(4.0))
  assert list(rows) == ['real_train_notes', 'real_test_notes', 'white_noise']
  assert rows['real_train_notes']['in_tune_50c'] is None and rows['real_train_notes']['fid_pitch'] == 30.0
  assert rows['white_noise']['in_tune_50c'] == 0.0 and rows['white_noise']['rms'] == pytest.approx(0.04)
  assert rows['real_test_notes']['pearson_correlation'] is None and rows['real_test_notes']['in_tune_50c'] == 1.0


def test_mean_and_sd_over_seeds_leave_out_missing_values():
  assert table.format_stats(table.stats([None]), '{:.2f}') == 'n/a'
  assert table.format_stats(table.stats([0.5, None]), '{:.2f}') == '0.50'
  assert table.format_stats(table.stats([1.0, 2.0, None]), '{:.1f}') == '1.5 +- 0.7'
  assert table.stats([1.0, None, 3.0]) == {
      'mean': 2.0,
      'sd': pytest.approx(np.sqrt(2)),
      'n': 2,
      'values': [1.0, None, 3.0]
  }
  assert table.format_value(None, '{:.1f}') == '' and table.format_value(0.25, '{:.0%}') == '25%'


def test_the_table_summarises_each_config_over_seeds_and_compares_configs():
  t = _table()
  assert t['schema_version'] == table.SCHEMA_VERSION and t['complete'] and t['machine'] == MACHINE
  assert [c['cell'] for c in t['cells']] == ['baseline_seed0', 'aux_seed0', 'baseline_seed1', 'aux_seed1']
  fid = t['summary']['aux']['fid_pitch']
  assert (fid['mean'], fid['sd'], fid['n'], fid['values']) == (8.0, pytest.approx(np.sqrt(8)), 2, [6.0, 10.0])
  assert t['summary']['baseline']['in_tune_per_pitch']['60']['mean'] == pytest.approx(0.15)
  assert t['wall_seconds'] == {'total': 115.5, 'cells': {c['cell']: {'train': 12.3, 'eval': 1.0} for c in t['cells']}}
  # Of the paper's claims, only the one between baseline and aux can be judged without `metric`.
  (comparison,) = t['comparisons']
  assert (comparison['a'], comparison['b'], comparison['measure']) == ('aux', 'baseline', 'pearson_correlation')
  assert comparison['difference'] == pytest.approx(0.5)
  assert comparison['ci95'][0] <= 0.5 <= comparison['ci95'][1]
  assert comparison['verdict'] in ('holds', 'the seeds cannot decide')
  assert set(t['paper_table1']) == {'baseline', 'metric', 'aux'}


def test_the_markdown_shows_mean_and_sd_the_reference_rows_and_the_comparisons():
  lines = table.to_markdown(_table()).splitlines()
  assert lines[0].startswith('Size `tiny`, seeds 0, 1; 2 CPU cores (a test CPU), JAX devices: 1 x cpu; wall time '
                             'of all cells and the shared stages: 0:01:55. Classifiers (shared by every cell): pitch '
                             '0.900, family 0.800 test accuracy.')
  assert lines[2] == ('| config | seeds | in tune | in tune at 36 / 60 | flatness | RMS | distinct. | FID pitch | '
                      'IS pitch (max 13) | FID family | IS family (max 4) | Pearson | silhouette |')
  assert ('| **baseline** | 0,1 | 30% +- 14% | 30% / 15% | 3.0e-06 +- 1.4e-06 | 0.030 +- 0.014 | 0.30 +- 0.14 | '
          '3.0 +- 1.4 | 6.0 +- 2.8 | 9.0 +- 4.2 | 1.50 +- 0.71 | 0.30 +- 0.14 | -0.03 +- 0.01 |') in lines
  assert '| **aux** | 0,1 | 80% +- 28% | 80% / 40% |' in '\n'.join(lines)
  assert ('| real training notes, another draw (reference: the FID floor) | |  | |  |  |  | 30.0 | 9.0 | 40.0 | 2.00 '
          '|  |  |') in lines
  assert '| white noise (reference) | | 0% | | 4.0e-06 | 0.040 | 0.40 | 30.0 | 9.0 | 40.0 | 2.00 |  |  |' in lines
  assert '| paper: aux | |  | |  |  |  | n/a | n/a | n/a | n/a | n/a | n/a |' in lines
  assert any(
      line.startswith('| the full model (aux) correlates more than the baseline | aux - baseline = +0.5 [')
      for line in lines)
  assert table.to_markdown(_table(complete=False)).startswith('**Partial: 4 of 6 cells finished** (rerun the '
                                                              'command to go on). Size `tiny`')


def test_the_readme_block_is_replaced_and_a_readme_without_one_is_named(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text(f'# Results\n{table.README_BEGIN}\nold table\n{table.README_END}\nafter\n')
  table.update_readme(str(readme), '| table |\n')
  assert readme.read_text() == f'# Results\n{table.README_BEGIN}\n| table |\n{table.README_END}\nafter\n'
  readme.write_text('# no markers\n')
  with pytest.raises(config_lib.ConfigError, match='no block'):
    table.update_readme(str(readme), '| table |\n')


def test_the_table_needs_no_jax_and_no_training():
  code = ('import sys; import face2music_jax.table; '
          'print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "tensorflow") or m in '
          '("face2music_jax.train", "face2music_jax.stages", "face2music_jax.evaluate")))')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120, env={
      **os.environ, 'PYTHONPATH': ROOT
  })
  assert result.returncode == 0 and result.stdout.strip() == '[]', result.stdout + result.stderr[-2000:]


def _part(cells: tuple[tuple[str, int, float], ...], classifiers: dict | None = None, commit: str = 'a' * 40,
          reference: float = 4.0) -> dict:
  records = [_record(c, s, v) for c, s, v in cells]
  return table.build(records, table.reference_rows(helpers.eval_summary(reference)), classifiers or {
      'pitch_test_accuracy': 0.9,
      'family_test_accuracy': 0.8
  }, [{
      'event': 'stages',
      'seconds': 50.0
  }], _info(complete=False, num_cells=4), machine=MACHINE, versions={'face2music_jax_commit': commit})


def test_tables_of_an_experiment_run_in_parts_merge_into_the_table_of_all_its_cells(tmp_path):
  from face2music_jax import experiment  # pylint: disable=import-outside-toplevel
  first = _part((('baseline', 0, 2.0), ('aux', 0, 99.0), ('baseline', 1, 4.0)))
  second = _part((('aux', 0, 6.0), ('aux', 1, 10.0)), commit='b' * 40)
  paths = [str(tmp_path / 'first.json'), str(tmp_path / 'second.json')]
  for t, path in zip((first, second), paths):
    files.write_json(path, t)
  merged = experiment.merge(paths, str(tmp_path / 'results'), None)
  # The cells of _table() (aux_seed0 from the second part, the last to hold it), in config and seed order.
  assert [c['cell'] for c in merged['cells']] == ['baseline_seed0', 'baseline_seed1', 'aux_seed0', 'aux_seed1']
  assert merged['summary'] == _table()['summary'] and merged['comparisons'] == _table()['comparisons']
  assert merged['complete'] and merged['num_cells'] == 4 and merged['wall_seconds']['total'] == 100.0
  assert [(p['source'], p['cells'], p['commit']) for p in merged['parts']
         ] == [(paths[0], ['baseline_seed0', 'baseline_seed1'], 'a' * 40),
               (paths[1], ['aux_seed0', 'aux_seed1'], 'b' * 40)]
  markdown = (tmp_path / 'results' / 'table1.md').read_text()
  assert markdown.startswith('Merged from 2 runs (baseline_seed0, baseline_seed1 at aaaaaaa; aux_seed0, aux_seed1 at '
                             'bbbbbbb). Size `tiny`, seeds 0, 1;')
  assert files.read_json(str(tmp_path / 'results' / 'table1.json')) == json.loads(json.dumps(merged))
  # One part alone is a partial table.
  assert experiment.merge(paths[:1], str(tmp_path / 'one'), None)['complete'] is False


def test_tables_of_other_stages_or_other_data_are_not_merged(tmp_path):
  first = _part((('baseline', 0, 2.0),))
  with pytest.raises(config_lib.ConfigError,
                     match=r'b\.json cannot be merged with a\.json: its classifiers .* \(other stages: '):
    table.merge([first, _part((('aux', 0, 6.0),), classifiers={'pitch_test_accuracy': 0.5})], ['a.json', 'b.json'])
  with pytest.raises(config_lib.ConfigError, match='its reference row real_test_notes has flatness'):
    table.merge([first, _part((('aux', 0, 6.0),), reference=5.0)], ['a.json', 'b.json'])
  (tmp_path / 'other.json').write_text('{"cells": 1}')
  from face2music_jax import experiment  # pylint: disable=import-outside-toplevel
  with pytest.raises(files.CorruptFileError, match='is not a table1.json'):
    experiment.merge([str(tmp_path / 'other.json')], str(tmp_path / 'r'), None)
  with pytest.raises(config_lib.ConfigError, match=r'missing\.json \(--merge\) cannot be read: No such file'):
    experiment.merge([str(tmp_path / 'missing.json')], str(tmp_path / 'r'), None)
