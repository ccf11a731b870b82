"""scripts/summarise.py: evaluated work directories -> one markdown row per config (mean +- sd over seeds), in
Table 1's columns (face2music_jax/table.py)."""

import importlib.util
import json
import os

from face2music_jax import table
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _summarise_module():
  spec = importlib.util.spec_from_file_location('summarise', os.path.join(ROOT, 'scripts', 'summarise.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _workdir(tmp_path, config: str, seed: int, value: float) -> str:
  workdir = tmp_path / f'{config}_seed{seed}'
  (workdir / 'eval').mkdir(parents=True)
  (workdir / 'eval' / 'metrics.json').write_text(json.dumps(helpers.eval_summary(value)))
  (workdir / 'config.json').write_text(
      json.dumps({
          'name': config,
          'size': 'tiny',
          'seed': seed,
          'workdir': str(workdir),
          'model': {
              'generator': 'harmonic'
          },
          'train': {
              'num_steps': 8
          }
      }))
  return str(workdir)


def test_runs_of_a_config_become_one_row_of_mean_and_sd_in_the_tables_columns(tmp_path):
  workdirs = [
      _workdir(tmp_path, 'aux', 0, 2.0),
      _workdir(tmp_path, 'aux', 1, 4.0),
      _workdir(tmp_path, 'baseline', 0, 6.0)
  ]
  lines = _summarise_module().summarise(workdirs).splitlines()
  assert lines[0] == ('| config | size | generator | steps | seeds | in tune | in tune 36 | in tune 60 | ' +
                      ' | '.join(c.title for c in table.COLUMNS[1:]) + ' |')
  assert lines[1] == '|' + '---|' * 17
  assert lines[2] == ('| aux | tiny | harmonic | 8 | 0,1 | 30% +- 14% | 30% +- 14% | 15% +- 7% | 3.0e-06 +- 1.4e-06 | '
                      '0.030 +- 0.014 | 0.30 +- 0.14 | 3.0 +- 1.4 | 6.0 +- 2.8 | 9.0 +- 4.2 | 1.50 +- 0.71 | '
                      '0.30 +- 0.14 | -0.03 +- 0.01 |')
  assert lines[3] == ('| baseline | tiny | harmonic | 8 | 0 | 60% | 60% | 30% | 6.0e-06 | 0.060 | 0.60 | 6.0 | 12.0 | '
                      '18.0 | 3.00 | 0.60 | -0.06 |')
  # The real test notes' listening measures, and the IS of the real notes the translations are compared with.
  assert lines[4] == '| real test notes | | | | | 100% |  |  | 2.0e-06 | 0.020 | 0.20 |  | 12.5 |  | 3.25 |  |  |'
  assert len(lines) == 5
