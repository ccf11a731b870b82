r"""Summarises evaluated work directories as a markdown table: mean +- sd over the runs (seeds) of each config.

  python scripts/summarise.py ~/.cache/face2music_jax/work/aux_small /tmp/aux_seed1 /tmp/aux_seed2 ...

Each directory needs `eval/metrics.json` (run_eval.py) and `config.json`; runs whose configs differ only in the
seed and the work directory are grouped (shown by config name, size, generator and checkpoint step). Columns: the listening measures of held-out faces (in tune within 50 cents, per
listening pitch, spectral flatness, RMS, face distinctness), FID / IS with the pitch and family classifiers and
the Pearson correlation. A last row per table gives the real test notes through the same measures.
"""

import argparse
import json
import os

import numpy as np

_COLUMNS = (
    ('in tune', lambda m: m['listening']['rows']['translations']['in_tune_50c'], '{:.0%}'),
    ('flatness', lambda m: m['listening']['rows']['translations']['flatness']['median'], '{:.1e}'),
    ('RMS', lambda m: m['listening']['rows']['translations']['rms']['median'], '{:.3f}'),
    ('distinctness', lambda m: m['listening']['rows']['translations']['distinctness']['mean'], '{:.2f}'),
    ('FID pitch', lambda m: m['metrics']['fid_pitch'], '{:.1f}'),
    ('IS pitch', lambda m: m['metrics']['inception_score_pitch'], '{:.1f}'),
    ('FID family', lambda m: m['metrics']['fid_family'], '{:.1f}'),
    ('IS family', lambda m: m['metrics']['inception_score_family'], '{:.2f}'),
    ('Pearson', lambda m: m['metrics']['pearson_correlation'], '{:.2f}'),
)


def _cell(values: list[float | None], fmt: str) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return 'n/a'
  if len(values) == 1:
    return fmt.format(values[0])
  return f'{fmt.format(np.mean(values))} +- {fmt.format(np.std(values, ddof=1))}'


def summarise(workdirs: list[str]) -> str:
  """The markdown table of `workdirs` (module docstring)."""
  groups: dict[tuple, list[dict]] = {}
  for workdir in workdirs:
    with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
      config = json.load(f)
    seed = config.pop('seed')
    config.pop('workdir')
    key = (config['name'], config['size'], config['model'].get('generator', 'wavegan'), metrics['checkpoint_step'],
           json.dumps(config, sort_keys=True))
    groups.setdefault(key, []).append({**metrics, 'seed': seed})
  pitches = sorted({p for runs in groups.values() for r in runs for p in r['listening']['pitches']})
  head = (['config', 'size', 'generator', 'steps', 'seeds', 'in tune'] + [f'in tune {p}' for p in pitches] +
          [c[0] for c in _COLUMNS[1:]])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for (name, size, generator, steps, _), runs in sorted(groups.items()):
    per_pitch = [
        _cell([r['listening']['rows']['translations']['per_pitch'].get(str(p), {}).get('in_tune_50c')
               for r in runs], '{:.0%}')
        for p in pitches
    ]
    cells = [_cell([get(r) for r in runs], fmt) for _, get, fmt in _COLUMNS]
    lines.append('| ' + ' | '.join(
        [name, size, generator,
         str(steps), ','.join(str(r['seed']) for r in runs), cells[0], *per_pitch, *cells[1:]]) + ' |')
  real = next(iter(groups.values()))[0]
  rows = real['listening']['rows']['real_test_notes']
  lines.append(
      '| real test notes | | | | | ' + ' | '.join(['{:.0%}'.format(rows['in_tune_50c'])] + [''] * len(pitches) + [
          '{:.1e}'.format(rows['flatness']['median']), '{:.3f}'.format(rows['rms']['median']), '{:.2f}'.format(
              rows['distinctness']['mean']), '', '{:.1f}'.format(real['metrics']['inception_score_pitch_real']), '',
          '{:.2f}'.format(real['metrics']['inception_score_family_real']), ''
      ]) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='+', help='evaluated work directories')
  print(summarise(parser.parse_args().workdirs))


if __name__ == '__main__':
  main()
