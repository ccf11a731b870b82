"""The whole experiment behind the paper's Table 1: configs x seeds at one size, each cell trained and evaluated,
summarised as one table with reference rows, mean +- sd over seeds and the paper's comparisons with 95% intervals.

`run(...)` (run_experiment.py) lays out `experiment_dir` as

  shared/                  the stage artefacts, trained once (with the `aux` config, seed 0): the audio embedding
                           phi, the pitch and family classifiers (the yardstick of FID / IS) and the distance
                           statistics. Every cell gets a copy, so that every cell is judged by the same classifiers.
  <config>_seed<S>/        each cell's work directory (run_train.py / run_eval.py would use the same), with
                           `cell.json` once the cell is trained and evaluated
  progress.jsonl           one line per event (cell trained, stopped, evaluated; seconds), for the wall time

and writes `results_dir/table1.json` (every cell, the summary, the comparisons, machine and versions) and
`results_dir/table1.md`. It is resumable: a rerun skips finished cells (those with `cell.json` at the requested
number of steps), resumes an unfinished one from its last checkpoint, and evaluates one trained but not evaluated.
"""

import ast
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from face2music_jax import config_lib
from face2music_jax import configs
from face2music_jax import evaluate
from face2music_jax import files
from face2music_jax import metrics
from face2music_jax import preemption
from face2music_jax import stages
from face2music_jax import train
from face2music_jax import workdir as workdir_lib
from face2music_jax.data import inputs as inputs_lib

CONFIGS = configs.NAMES
# Markdown labels of reference rows whose key alone would not say what they are.
REFERENCE_LABELS = {'real_train_notes': 'real training notes, another draw (reference: the FID floor)'}
SHARED = 'shared'
SHARED_ARTEFACTS = ('audio_embedding', 'classifiers', 'statistics.json')
CELL_FILE = 'cell.json'
PROGRESS_FILE = 'progress.jsonl'
SCHEMA_VERSION = 1
README_BEGIN, README_END = '<!-- table1:begin -->', '<!-- table1:end -->'

# (key, column title, format, where in an evaluation summary).
COLUMNS = (
    ('in_tune_50c', 'in tune', '{:.0%}', lambda s: s['listening']['rows']['translations']['in_tune_50c']),
    ('flatness', 'flatness', '{:.1e}', lambda s: s['listening']['rows']['translations']['flatness']['median']),
    ('rms', 'RMS', '{:.3f}', lambda s: s['listening']['rows']['translations']['rms']['median']),
    ('distinctness', 'distinct.', '{:.2f}', lambda s: s['listening']['rows']['translations']['distinctness']['mean']),
    ('fid_pitch', 'FID pitch', '{:.1f}', lambda s: s['metrics']['fid_pitch']),
    ('inception_score_pitch', 'IS pitch', '{:.1f}', lambda s: s['metrics']['inception_score_pitch']),
    ('fid_family', 'FID family', '{:.1f}', lambda s: s['metrics']['fid_family']),
    ('inception_score_family', 'IS family', '{:.2f}', lambda s: s['metrics']['inception_score_family']),
    ('pearson_correlation', 'Pearson', '{:.2f}', lambda s: s['metrics']['pearson_correlation']),
    ('silhouette_value', 'silhouette', '{:.2f}', lambda s: s['metrics']['silhouette_value']),
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
    } for name in CONFIGS
}


def cell_name(config_name: str, seed: int) -> str:
  return f'{config_name}_seed{seed}'


def cell_config(config_name: str, size: str, seed: int, overrides: dict[str, Any],
                workdir: str) -> ml_collections.ConfigDict:
  """configs/<config_name>.py at `size`, with the seed, the overrides (dotted field -> value) and the work dir."""
  if config_name not in CONFIGS:
    raise config_lib.ConfigError(f'Unknown config {config_name!r}: expected some of {", ".join(CONFIGS)}.')
  config = importlib.import_module(f'face2music_jax.configs.{config_name}').get_config(size)
  for field, value in overrides.items():
    try:
      config_lib.set_field(config, field, value)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'--set {field}={value!r}: the config has no field {field}.') from e
  config.seed = seed
  config.workdir = workdir
  return config_lib.validate(config)


def parse_override(text: str) -> tuple[str, Any]:
  """'train.num_steps=2000' -> ('train.num_steps', 2000): the value as a Python literal, else as a string."""
  field, sep, value = text.partition('=')
  if not sep or not field:
    raise config_lib.ConfigError(f'--set {text!r}: expected field=value, e.g. train.num_steps=2000.')
  try:
    return field, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return field, value


def _checkpoint_step(workdir: str) -> int:
  """The newest complete checkpoint's step in `workdir` (0 if none): where training resumes from."""
  return max(workdir_lib.checkpoint_steps(workdir), default=0)


def _copy_artefacts(shared: str, workdir: str) -> None:
  """Copies the shared stage artefacts into a cell's work directory, each whole or not at all."""
  os.makedirs(workdir, exist_ok=True)
  for name in SHARED_ARTEFACTS:
    source, target = os.path.join(shared, name), os.path.join(workdir, name)
    if os.path.exists(target):
      continue
    partial = f'{target}.copying'
    if os.path.isdir(partial):
      shutil.rmtree(partial)
    if os.path.isdir(source):
      shutil.copytree(source, partial)
    else:
      shutil.copyfile(source, partial)
    os.replace(partial, target)


def _log_event(experiment_dir: str, **event: Any) -> None:
  files.append_text(os.path.join(experiment_dir, PROGRESS_FILE),
                    json.dumps({
                        'time': round(time.time(), 3),
                        **event
                    }) + '\n')


def read_events(experiment_dir: str) -> list[dict[str, Any]]:
  path = os.path.join(experiment_dir, PROGRESS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _cell_record(config: ml_collections.ConfigDict, summary: dict[str, Any], events: list[dict[str,
                                                                                               Any]]) -> dict[str, Any]:
  """What table1.json keeps of one cell: its identity, measures, classifier accuracies and seconds."""
  name = cell_name(config.name, config.seed)
  seconds = {'train': 0.0, 'eval': 0.0}
  for event in events:
    if event.get('cell') == name and event['event'] in ('trained', 'stopped', 'evaluated'):
      seconds['eval' if event['event'] == 'evaluated' else 'train'] += event['seconds']
  rows = summary['listening']['rows']['translations']
  return {
      'cell': name,
      'config': config.name,
      'seed': config.seed,
      'size': config.size,
      'generator': config.model.generator,
      'steps': summary['checkpoint_step'],
      'measures': {
          key: get(summary) for key, _, _, get in COLUMNS
      },
      'in_tune_per_pitch': {
          str(p): v['in_tune_50c'] for p, v in rows['per_pitch'].items()
      },
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


def _finished(path: str, steps: int) -> dict[str, Any] | None:
  try:
    record = files.read_json(path)
  except (OSError, files.CorruptFileError):
    return None
  return record if record.get('record', {}).get('steps') == steps else None


def run(configs: tuple[str, ...], seeds: tuple[int, ...], size: str, experiment_dir: str, results_dir: str,
        overrides: dict[str, Any] | None = None, readme: str | None = None) -> dict[str, Any]:
  """Trains and evaluates every missing cell of configs x seeds (seed by seed), then writes the results.

  Returns:
    The contents of `results_dir/table1.json`.

  Raises:
    preemption.Preempted: SIGTERM stopped it (a cell in training saves a checkpoint first); rerun to go on.
  """
  overrides = dict(overrides or {})
  if not configs or not seeds:
    raise config_lib.ConfigError('An experiment needs at least one config and one seed.')
  cells = [(c, s) for s in seeds for c in configs]  # Seed by seed: every config has a first seed early.
  # Every config is checked before any work.
  configs_by_cell = {
      (c, s): cell_config(c, size, s, overrides, os.path.join(experiment_dir, cell_name(c, s))) for c, s in cells
  }
  os.makedirs(experiment_dir, exist_ok=True)
  files.check_writable(experiment_dir, 'experiment directory')
  os.makedirs(results_dir, exist_ok=True)
  files.check_writable(results_dir, 'results directory')

  shared = os.path.join(experiment_dir, SHARED)
  shared_config = cell_config('aux', size, 0, overrides, shared)
  if not all(os.path.exists(os.path.join(shared, a)) for a in SHARED_ARTEFACTS):
    logging.info('[experiment] the shared stages: data, audio embedding, classifiers, statistics in %s', shared)
  start = time.time()
  stages.ensure_data(shared_config)
  # One loader of the data for the stages and every cell (cells differ in seed and losses, not in data).
  inputs = inputs_lib.Inputs(shared_config)
  metric = stages.ensure_audio_embedding(shared_config, shared, inputs)
  classifiers = stages.ensure_classifiers(shared_config, shared, inputs)['metrics']
  stages.ensure_statistics(shared_config, shared, metric, inputs)
  if time.time() - start > 5:
    _log_event(experiment_dir, cell=SHARED, event='stages', seconds=round(time.time() - start, 1))
  logging.info('[experiment] classifiers (shared by every cell): %s', classifiers)

  experiment_info = {
      'configs': list(configs),
      'seeds': list(seeds),
      'size': size,
      'overrides': overrides,
      'experiment_dir': experiment_dir
  }
  records = []
  for number, (c, s) in enumerate(cells, 1):
    config = configs_by_cell[(c, s)]
    name, workdir = cell_name(c, s), config.workdir
    done = _finished(os.path.join(workdir, CELL_FILE), config.train.num_steps)
    if done is not None:
      logging.info('[experiment] cell %d/%d %s: finished earlier, skipped.', number, len(cells), name)
      records.append(done['record'])
      continue
    _copy_artefacts(shared, workdir)
    from_step = _checkpoint_step(workdir)
    if from_step < config.train.num_steps:
      logging.info('[experiment] cell %d/%d %s: training %s from step %d to %d.', number, len(cells), name, config.name,
                   from_step, config.train.num_steps)
      start = time.time()
      try:
        train.train(config, workdir, inputs)
      except preemption.Preempted:
        _log_event(experiment_dir, cell=name, event='stopped', from_step=from_step, to_step=_checkpoint_step(workdir),
                   seconds=round(time.time() - start, 1))
        raise
      _log_event(experiment_dir, cell=name, event='trained', from_step=from_step, to_step=config.train.num_steps,
                 seconds=round(time.time() - start, 1))
    logging.info('[experiment] cell %d/%d %s: evaluating.', number, len(cells), name)
    start = time.time()
    summary = evaluate.evaluate(config, workdir, overwrite=True, inputs=inputs)
    _log_event(experiment_dir, cell=name, event='evaluated', seconds=round(time.time() - start, 1))
    record = _cell_record(config, summary, read_events(experiment_dir))
    files.write_json(os.path.join(workdir, CELL_FILE), {
        'record': record,
        'reference_rows': _reference_rows(summary)
    }, checksum=True)
    records.append(record)
    logging.info('[experiment] cell %d/%d %s done: %s', number, len(cells), name, json.dumps(record['measures']))
    # The table so far, after every cell: an interrupted experiment still shows what it has.
    _write_results(records, len(cells), classifiers, experiment_dir, results_dir, experiment_info, None)

  table = _write_results(records, len(cells), classifiers, experiment_dir, results_dir, experiment_info, readme)
  logging.info('[experiment] wrote %s and table1.md (total wall time of the cells and stages: %.0f s).',
               os.path.join(results_dir, 'table1.json'), table['wall_seconds']['total'])
  return table


def _write_results(records: list[dict[str, Any]], num_cells: int, classifiers: dict[str, Any], experiment_dir: str,
                   results_dir: str, info: dict[str, Any], readme: str | None) -> dict[str, Any]:
  """Writes table1.json and table1.md of the cells finished so far ('complete' says whether that is all)."""
  # The reference rows are the same in every cell (same data, same evaluation seed); a row added to the evaluation
  # after the first cells were evaluated comes from the cells that have it.
  reference_rows = {}
  for record in records:
    rows = files.read_json(os.path.join(experiment_dir, record['cell'], CELL_FILE))['reference_rows']
    reference_rows.update({row: values for row, values in rows.items() if row not in reference_rows})
  table = _table(records, reference_rows, classifiers, read_events(experiment_dir), {
      **info, 'complete': len(records) == num_cells,
      'num_cells': num_cells
  })
  files.write_json(os.path.join(results_dir, 'table1.json'), table)
  markdown = to_markdown(table)
  files.write_text(os.path.join(results_dir, 'table1.md'), markdown)
  if readme:
    update_readme(readme, markdown)
  return table


def _reference_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """The reference rows of one evaluation, in the table's columns (None where a column does not apply)."""
  rows = {}
  for row, classified in summary['reference_rows'].items():
    listened = summary['listening']['rows'].get(row)  # The FID floor's row has no listening measures.
    rows[row] = {
        'in_tune_50c': None if listened is None else listened['in_tune_50c'],
        'flatness': None if listened is None else listened['flatness']['median'],
        'rms': None if listened is None else listened['rms']['median'],
        'distinctness': None if listened is None else listened['distinctness']['mean'],
        'pearson_correlation': None,
        'silhouette_value': None,
        **classified
    }
  return rows


def _stats(values: list[float | None]) -> dict[str, Any]:
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


def _machine() -> dict[str, Any]:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = re.search(r'model name\s*:\s*(.*)', f.read()).group(1)
  except (OSError, AttributeError):
    pass
  return {
      'cpu': cpu,
      'cpu_count': os.cpu_count(),
      'platform': platform.platform(),
      'devices': sorted({d.device_kind for d in jax.devices()}),
      'num_devices': jax.device_count()
  }


def _versions() -> dict[str, Any]:
  versions = {}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'librosa', 'tensorflow-datasets',
                  'scikit-learn', 'ml_collections'):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  try:
    versions['face2music_jax_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'],
                                                       cwd=os.path.dirname(os.path.abspath(__file__)),
                                                       capture_output=True, text=True, timeout=10,
                                                       check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    versions['face2music_jax_commit'] = None
  return versions


def _table(records: list[dict[str, Any]], reference_rows: dict[str, Any], classifiers: dict[str, Any],
           events: list[dict[str, Any]], experiment: dict[str, Any]) -> dict[str, Any]:
  by_config: dict[str, list[dict[str, Any]]] = {}
  for record in records:
    by_config.setdefault(record['config'], []).append(record)
  summary = {}
  for name, runs in by_config.items():
    summary[name] = {key: _stats([r['measures'][key] for r in runs]) for key, *_ in COLUMNS}
    pitches = sorted({p for r in runs for p in r['in_tune_per_pitch']}, key=int)
    summary[name]['in_tune_per_pitch'] = {p: _stats([r['in_tune_per_pitch'].get(p) for r in runs]) for p in pitches}
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
      'machine': _machine(),
      'versions': _versions(),
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


def _format(stats: dict[str, Any], fmt: str) -> str:
  if stats['mean'] is None:
    return 'n/a'
  if stats['sd'] is None:
    return fmt.format(stats['mean'])
  return f'{fmt.format(stats["mean"])} +- {fmt.format(stats["sd"])}'


def _value(value: float | None, fmt: str) -> str:
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
    per_pitch = ' / '.join(_value(summary['in_tune_per_pitch'][p]['mean'], '{:.0%}') for p in pitches)
    cells = [_format(summary[key], fmt) for key, _, fmt, _ in COLUMNS]
    lines.append(f'| **{name}** | {seeds} | {cells[0]} | {per_pitch} | ' + ' | '.join(cells[1:]) + ' |')
  for row, values in table['reference_rows'].items():
    cells = [_value(values.get(key), fmt) for key, _, fmt, _ in COLUMNS]
    label = REFERENCE_LABELS.get(row, f'{row.replace("_", " ")} (reference)')
    lines.append(f'| {label} | | {cells[0]} | | ' + ' | '.join(cells[1:]) + ' |')
  for name, values in table['paper_table1'].items():
    cells = [(_value(values[key], fmt) or 'n/a') if key in values else '' for key, _, fmt, _ in COLUMNS]
    lines.append(f'| paper: {name} | | {cells[0]} | | ' + ' | '.join(cells[1:]) + ' |')
  c = table['classifiers']
  wall = table['wall_seconds']['total']
  machine = table['machine']
  partial = '' if table['complete'] else (f'**Partial: {len(table["cells"])} of {table["num_cells"]} cells '
                                          'finished** (rerun the command to go on). ')
  seeds = ', '.join(map(str, table['seeds']))
  out = [
      f'{partial}Size `{table["size"]}`, seeds {seeds}; {machine["cpu_count"]} CPU cores '
      f'({machine["cpu"]}), JAX devices: {machine["num_devices"]} x {", ".join(machine["devices"])}; '
      f'wall time of all cells and the shared stages: {int(wall // 3600)}:{int(wall % 3600 // 60):02d}:'
      f'{int(wall % 60):02d}. Classifiers (shared by every cell): pitch {c["pitch_test_accuracy"]:.3f}, family '
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
