"""The paper's Table 1 as data and as text: its columns, what table1.json keeps of a cell, the summary (mean +- sd
over seeds), the reference rows, the paper's comparisons with 95% intervals, the markdown and the README block.

Pure functions of evaluation summaries (eval/metrics.json, `evaluate.evaluate`'s return) and of cell records: no
training, no evaluation, no JAX. experiment.py runs the cells and hands their records here; scripts/summarise.py
tabulates any evaluated work directories with the same columns and the same mean +- sd.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from face2music_jax import config_lib
from face2music_jax import configs
from face2music_jax import files
from face2music_jax import metrics

SCHEMA_VERSION = 1
README_BEGIN, README_END = '<!-- table1:begin -->', '<!-- table1:end -->'
# Markdown labels of reference rows whose key alone would not say what they are.
REFERENCE_LABELS = {'real_train_notes': 'real training notes, another draw (reference: the FID floor)'}


class Column(NamedTuple):
  """One measure of the table: its key (in table1.json), title, format, and where it is in an evaluation summary."""
  key: str
  title: str
  fmt: str
  get: Callable[[dict[str, Any]], float | None]


# The listening measures of one row of an evaluation's listening rows (the translations, or a reference row).
LISTENING: dict[str, Callable[[dict[str, Any]], float | None]] = {
    'in_tune_50c': lambda row: row['in_tune_50c'],
    'flatness': lambda row: row['flatness']['median'],
    'rms': lambda row: row['rms']['median'],
    'distinctness': lambda row: row['distinctness']['mean'],
}


def _listened(key: str) -> Callable[[dict[str, Any]], float | None]:
  return lambda summary: LISTENING[key](summary['listening']['rows']['translations'])


def _metric(key: str) -> Callable[[dict[str, Any]], float | None]:
  return lambda summary: summary['metrics'][key]


COLUMNS = (
    Column('in_tune_50c', 'in tune', '{:.0%}', _listened('in_tune_50c')),
    Column('flatness', 'flatness', '{:.1e}', _listened('flatness')),
    Column('rms', 'RMS', '{:.3f}', _listened('rms')),
    Column('distinctness', 'distinct.', '{:.2f}', _listened('distinctness')),
    Column('fid_pitch', 'FID pitch', '{:.1f}', _metric('fid_pitch')),
    Column('inception_score_pitch', 'IS pitch', '{:.1f}', _metric('inception_score_pitch')),
    Column('fid_family', 'FID family', '{:.1f}', _metric('fid_family')),
    Column('inception_score_family', 'IS family', '{:.2f}', _metric('inception_score_family')),
    Column('pearson_correlation', 'Pearson', '{:.2f}', _metric('pearson_correlation')),
    Column('silhouette_value', 'silhouette', '{:.2f}', _metric('silhouette_value')),
)

# The paper's claims that Table 1 supports (arXiv 2006.13469, section 4): (config a, config b, measure, the sign of
# mean(a) - mean(b) that the claim predicts (0: no change), the claim).
CLAIMS = (
    ('metric', 'baseline', 'pearson_correlation', +1, 'the metric loss raises the Pearson correlation'),
    ('metric', 'baseline', 'fid_pitch', +1, 'the metric loss costs fidelity (FID pitch rises)'),
    ('metric', 'baseline', 'fid_family', +1, 'the metric loss costs diversity (FID family rises)'),
    ('aux', 'metric', 'fid_pitch', -1, 'the auxiliary discriminator wins fidelity back (FID pitch falls)'),
    ('aux', 'metric', 'fid_family', -1, 'the auxiliary discriminator wins diversity back (FID family falls)'),
    ('aux', 'metric', 'pearson_correlation', 0, 'the auxiliary discriminator keeps the correlation'),
    ('aux', 'baseline', 'pearson_correlation', +1, 'the full model (aux) correlates more than the baseline'),
)

# The paper's Table 1, to print beside ours. Its numbers could not be read in this project's workplace (no access
# to the paper's PDF); None is printed as "n/a". The directions of its claims are in CLAIMS.
PAPER_TABLE1: dict[str, dict[str, float | None]] = {
    name: {
        key: None for key in ('fid_pitch', 'inception_score_pitch', 'fid_family', 'inception_score_family',
                              'pearson_correlation', 'silhouette_value')
    } for name in configs.NAMES
}


def measures(summary: dict[str, Any]) -> dict[str, float | None]:
  """The table's measures (COLUMNS) of one evaluation summary, by key."""
  return {column.key: column.get(summary) for column in COLUMNS}


def in_tune_per_pitch(summary: dict[str, Any]) -> dict[str, float | None]:
  """The translations' fraction in tune (within 50 cents) at each listening pitch: {'<midi>': fraction}."""
  per_pitch = summary['listening']['rows']['translations']['per_pitch']
  return {str(p): v['in_tune_50c'] for p, v in per_pitch.items()}


def cell_record(cell: str, config: Any, summary: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
  """What table1.json keeps of one cell: its identity (`config`: the cell's ConfigDict), measures, classifier
  accuracies and seconds ({'train': s, 'eval': s})."""
  return {
      'cell': cell,
      'config': config.name,
      'seed': config.seed,
      'size': config.size,
      'generator': config.model.generator,
      'steps': summary['checkpoint_step'],
      'measures': measures(summary),
      'in_tune_per_pitch': in_tune_per_pitch(summary),
      'pearson_per_pitch': summary['pearson_per_pitch'],
      'pearson_correlation_random_pitch': summary['metrics']['pearson_correlation_random_pitch'],
      'classifiers': {
          k: summary['metrics'][f'{k}_test_accuracy'] for k in ('pitch', 'family')
      },
      'inception_score_max': {
          k: summary['metrics'][f'inception_score_{k}_max'] for k in ('pitch', 'family')
      },
      'seconds': {
          k: round(v, 1) for k, v in seconds.items()
      },
      'workdir': config.workdir,
  }


def reference_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """The reference rows of one evaluation, in the table's columns (None where a column does not apply)."""
  rows = {}
  for row, classified in summary['reference_rows'].items():
    listened = summary['listening']['rows'].get(row)  # The FID floor's row has no listening measures.
    rows[row] = {
        **{
            key: None if listened is None else get(listened) for key, get in LISTENING.items()
        }, 'pearson_correlation': None,
        'silhouette_value': None,
        **classified
    }
  return rows


def stats(values: list[float | None]) -> dict[str, Any]:
  """Mean and sd (n - 1) of the values that are not None, their number, and the values."""
  kept = [v for v in values if v is not None]
  return {
      'mean': float(np.mean(kept)) if kept else None,
      'sd': float(np.std(kept, ddof=1)) if len(kept) > 1 else None,
      'n': len(kept),
      'values': values
  }


def _verdict(interval: tuple[float, float, float] | None, sign: int) -> str:
  if interval is None:
    return 'needs 2+ seeds of each config'
  _, low, high = interval
  if sign == 0:
    return 'holds (no difference shown)' if low <= 0 <= high else ('lower' if high < 0 else 'higher')
  if low > 0 if sign > 0 else high < 0:
    return 'holds'
  if high < 0 if sign > 0 else low > 0:
    return 'contradicted'
  return 'the seeds cannot decide'


def build(records: list[dict[str, Any]], reference_rows: dict[str, Any], classifiers: dict[str, Any],
          events: list[dict[str, Any]], experiment: dict[str, Any], machine: dict[str, Any],
          versions: dict[str, Any]) -> dict[str, Any]:
  """table1.json: the cell records (`cell_record`), mean +- sd per config, the reference rows, the comparisons
  (CLAIMS) with 95% Welch intervals, the wall time of the progress events; `experiment`, `machine` and `versions`
  are kept as given."""
  by_config: dict[str, list[dict[str, Any]]] = {}
  for record in records:
    by_config.setdefault(record['config'], []).append(record)
  summary = {}
  for name, runs in by_config.items():
    summary[name] = {key: stats([r['measures'][key] for r in runs]) for key, *_ in COLUMNS}
    pitches = sorted({p for r in runs for p in r['in_tune_per_pitch']}, key=int)
    summary[name]['in_tune_per_pitch'] = {p: stats([r['in_tune_per_pitch'].get(p) for r in runs]) for p in pitches}
  comparisons = []
  for a, b, key, sign, claim in CLAIMS:
    if a in by_config and b in by_config:
      values = [[r['measures'][key] for r in by_config[c] if r['measures'][key] is not None] for c in (a, b)]
      interval = metrics.welch_interval(*values)
      comparisons.append({
          'claim': claim,
          'a': a,
          'b': b,
          'measure': key,
          'predicted_sign': sign,
          'difference': None if interval is None else interval[0],
          'ci95': None if interval is None else list(interval[1:]),
          'verdict': _verdict(interval, sign)
      })
  seconds = [e['seconds'] for e in events if e['event'] in ('stages', 'trained', 'stopped', 'evaluated')]
  return {
      'schema_version': SCHEMA_VERSION,
      **experiment,
      'machine': machine,
      'versions': versions,
      'wall_seconds': {
          'total': round(float(sum(seconds)), 1),
          'cells': {
              r['cell']: r['seconds'] for r in records
          }
      },
      'classifiers': classifiers,
      'inception_score_max': records[0]['inception_score_max'],
      'cells': records,
      'summary': summary,
      'reference_rows': reference_rows,
      'comparisons': comparisons,
      'paper_table1': PAPER_TABLE1,
  }


def merge(tables: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
  """One table1.json of the cells of several (`build`'s outputs, read from `sources`): an experiment run in parts,
  e.g. more seeds later or on another machine. The parts must share the size, the overrides and the classifiers
  (the same stages: FID and IS are comparable only then) and agree on the reference rows; a cell in several parts
  is taken from the last of them (logged). 'parts' says which commit, machine and cells each part gave.

  Raises:
    config_lib.ConfigError: naming the part and the field that differs.
  """
  from absl import logging  # pylint: disable=import-outside-toplevel
  first, first_source = tables[0], sources[0]
  for table, source in zip(tables[1:], sources[1:]):
    for key in ('schema_version', 'size', 'overrides', 'classifiers'):
      if table[key] != first[key]:
        hint = (' (other stages: FID and IS would not be comparable; a run on another machine trains other '
                'classifiers: start it with a copy of the first run\'s <experiment_dir>/shared in its experiment '
                'directory)') if key == 'classifiers' else ''
        raise config_lib.ConfigError(f'{source} cannot be merged with {first_source}: its {key} is {table[key]!r}, '
                                     f'not {first[key]!r}{hint}.')
    for row, values in table['reference_rows'].items():
      theirs = first['reference_rows'].get(row, values)
      for key, value in values.items():
        if (value is None) != (theirs.get(key) is None) or (value is not None and
                                                            not np.isclose(value, theirs[key], rtol=1e-4)):
          raise config_lib.ConfigError(f'{source} cannot be merged with {first_source}: its reference row {row} '
                                       f'has {key} = {value}, not {theirs.get(key)} (other data or evaluation?).')
  records: dict[str, dict[str, Any]] = {}
  parts = []
  for table, source in zip(tables, sources):
    for record in table['cells']:
      if record['cell'] in records:
        logging.warning('%s is in several tables: the one of %s is used.', record['cell'], source)
      records[record['cell']] = {**record, 'source': source}
  for table, source in zip(tables, sources):
    parts.append({
        'source': source,
        'cells': [c for c, r in records.items() if r['source'] == source],
        'commit': table['versions'].get('face2music_jax_commit'),
        'machine': table['machine'],
        'wall_seconds': table['wall_seconds']['total'],
    })
  # The grid: the configs and seeds that any part was run for (complete when every cell of it is here).
  config_names = [n for n in configs.NAMES if any(n in t['configs'] for t in tables)]
  seeds = sorted({seed for t in tables for seed in t['seeds']})
  ordered = sorted(records.values(), key=lambda r: (config_names.index(r['config']), r['seed']))
  reference_rows = {}
  for table in tables:
    reference_rows.update({k: v for k, v in table['reference_rows'].items() if k not in reference_rows})
  events = [{'event': 'stages', 'seconds': part['wall_seconds']} for part in parts]
  experiment = {
      'configs': config_names,
      'seeds': seeds,
      'size': first['size'],
      'overrides': first['overrides'],
      'experiment_dir': sorted({t['experiment_dir'] for t in tables}),
      'complete': len(ordered) == len(config_names) * len(seeds),
      'num_cells': len(config_names) * len(seeds),
      'parts': parts,
  }
  return build(ordered, reference_rows, first['classifiers'], events, experiment, first['machine'], first['versions'])


def format_stats(entry: dict[str, Any], fmt: str) -> str:
  """'mean +- sd' of a `stats` entry in `fmt`; the mean alone of one value; 'n/a' of none."""
  if entry['mean'] is None:
    return 'n/a'
  if entry['sd'] is None:
    return fmt.format(entry['mean'])
  return f'{fmt.format(entry["mean"])} +- {fmt.format(entry["sd"])}'


def format_value(value: float | None, fmt: str) -> str:
  """`value` in `fmt`; '' of None (a column that does not apply)."""
  return '' if value is None else fmt.format(value)


def to_markdown(table: dict[str, Any]) -> str:
  """table1.json as markdown: the measures per config (mean +- sd over seeds), the reference rows, the paper's
  values, and the comparisons with their 95% intervals."""
  maxima = table['inception_score_max']
  titles = [
      t.replace('IS pitch', f'IS pitch (max {maxima["pitch"]})').replace('IS family',
                                                                         f'IS family (max {maxima["family"]})')
      for _, t, _, _ in COLUMNS
  ]
  pitches = sorted({p for s in table['summary'].values() for p in s['in_tune_per_pitch']}, key=int)
  head = ['config', 'seeds', titles[0], f'in tune at {" / ".join(pitches)}', *titles[1:]]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for name, summary in table['summary'].items():
    seeds = ','.join(str(r['seed']) for r in table['cells'] if r['config'] == name)
    per_pitch = ' / '.join(format_value(summary['in_tune_per_pitch'][p]['mean'], '{:.0%}') for p in pitches)
    cells = [format_stats(summary[key], fmt) for key, _, fmt, _ in COLUMNS]
    lines.append(f'| **{name}** | {seeds} | {cells[0]} | {per_pitch} | ' + ' | '.join(cells[1:]) + ' |')
  for row, values in table['reference_rows'].items():
    cells = [format_value(values.get(key), fmt) for key, _, fmt, _ in COLUMNS]
    label = REFERENCE_LABELS.get(row, f'{row.replace("_", " ")} (reference)')
    lines.append(f'| {label} | | {cells[0]} | | ' + ' | '.join(cells[1:]) + ' |')
  for name, values in table['paper_table1'].items():
    cells = [(format_value(values[key], fmt) or 'n/a') if key in values else '' for key, _, fmt, _ in COLUMNS]
    lines.append(f'| paper: {name} | | {cells[0]} | | ' + ' | '.join(cells[1:]) + ' |')
  c = table['classifiers']
  wall = table['wall_seconds']['total']
  machine = table['machine']
  parts = table.get('parts')
  partial = '' if table['complete'] else (
      f'**Partial: {len(table["cells"])} of {table["num_cells"]} cells '
      'finished** ' + ('(run the others and merge again). ' if parts else '(rerun the command to go on). '))
  seeds = ', '.join(map(str, table['seeds']))
  if parts:
    partial += 'Merged from {} runs ({}). '.format(
        len(parts),
        '; '.join(f'{", ".join(p["cells"])} at {(p["commit"] or "unknown")[:7]}' for p in parts if p['cells']))
  spent = 'runs' if parts else 'cells and the shared stages'
  out = [
      f'{partial}Size `{table["size"]}`, seeds {seeds}; {machine["cpu_count"]} CPU cores '
      f'({machine["cpu"]}), JAX devices: {machine["num_devices"]} x {", ".join(machine["devices"])}; '
      f'wall time of all {spent}: {int(wall // 3600)}:{int(wall % 3600 // 60):02d}:{int(wall % 60):02d}. '
      f'Classifiers (shared by every cell): pitch {c["pitch_test_accuracy"]:.3f}, family '
      f'{c["family_test_accuracy"]:.3f} test accuracy. mean +- sd over seeds; the paper\'s numbers are n/a where '
      'they could not be read here.', '', *lines, '',
      '| claim (paper) | difference of means, 95% interval (Welch) | verdict |', '| --- | --- | --- |'
  ]
  for comparison in table['comparisons']:
    interval = ('n/a' if comparison['difference'] is None else
                f'{comparison["a"]} - {comparison["b"]} = {comparison["difference"]:+.3g} '
                f'[{comparison["ci95"][0]:+.3g}, {comparison["ci95"][1]:+.3g}]')
    out.append(f'| {comparison["claim"]} | {interval} | {comparison["verdict"]} |')
  return '\n'.join(out) + '\n'


def update_readme(path: str, markdown: str) -> None:
  """Replaces the block between README_BEGIN and README_END in `path` with `markdown`."""
  with open(path) as f:
    text = f.read()
  begin, end = text.find(README_BEGIN), text.find(README_END)
  if begin < 0 or end < begin:
    raise config_lib.ConfigError(f'{path} has no block between {README_BEGIN} and {README_END} to write the table '
                                 'into.')
  files.write_text(path, text[:begin + len(README_BEGIN)] + '\n' + markdown + text[end:])
