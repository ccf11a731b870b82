r"""Summarises evaluated work directories as a markdown table: mean +- sd over the runs (seeds) of each config.

  python scripts/summarise.py ~/.cache/face2music_jax/work/aux_small /tmp/aux_seed1 /tmp/aux_seed2 ...

Each directory needs `eval/metrics.json` (run_eval.py) and `config.json`; runs whose configs differ only in the
seed and the work directory are grouped (shown by config name, size, generator and checkpoint step). Columns: those
of Table 1 (face2music_jax/table.py, with its mean +- sd): the listening measures of held-out faces (in tune within
50 cents, also per listening pitch, spectral flatness, RMS, face distinctness), FID / IS with the pitch and family
classifiers, the Pearson correlation and the silhouette value. A last row gives the real test notes' listening
measures and the IS of the real notes that the translations are compared with.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from face2music_jax import table  # pylint: disable=g-import-not-at-top


def _cell(values: list[float | None], fmt: str) -> str:
  return table.format_stats(table.stats(values), fmt)


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
  in_tune, *others = table.COLUMNS
  pitches = sorted({p for runs in groups.values() for r in runs for p in r['listening']['pitches']})
  head = (['config', 'size', 'generator', 'steps', 'seeds', in_tune.title] + [f'{in_tune.title} {p}' for p in pitches] +
          [c.title for c in others])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for (name, size, generator, steps, _), runs in sorted(groups.items()):
    per_pitch = [_cell([table.in_tune_per_pitch(r).get(str(p)) for r in runs], in_tune.fmt) for p in pitches]
    cells = [_cell([c.get(r) for r in runs], c.fmt) for c in table.COLUMNS]
    lines.append('| ' + ' | '.join(
        [name, size, generator,
         str(steps), ','.join(str(r['seed']) for r in runs), cells[0], *per_pitch, *cells[1:]]) + ' |')
  real = next(iter(groups.values()))[0]
  listened = real['listening']['rows']['real_test_notes']
  values = {
      **{
          key: get(listened) for key, get in table.LISTENING.items()
      },
      **{
          f'inception_score_{k}': real['metrics'][f'inception_score_{k}_real'] for k in ('pitch', 'family')
      }
  }
  cells = [table.format_value(values.get(c.key), c.fmt) for c in table.COLUMNS]
  lines.append('| real test notes | | | | | ' + ' | '.join([cells[0], *[''] * len(pitches), *cells[1:]]) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='+', help='evaluated work directories')
  print(summarise(parser.parse_args().workdirs))


if __name__ == '__main__':
  main()
