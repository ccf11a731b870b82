"""The whole experiment behind the paper's Table 1: configs x seeds at one size, each cell trained and evaluated;
table.py makes the cells' records one table (reference rows, mean +- sd over seeds, the paper's comparisons with 95%
intervals).

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
from absl import logging

from face2music_jax import config_lib
from face2music_jax import configs
from face2music_jax import evaluate
from face2music_jax import files
from face2music_jax import preemption
from face2music_jax import stages
from face2music_jax import table as table_lib
from face2music_jax import train
from face2music_jax import workdir as workdir_lib
from face2music_jax.data import inputs as inputs_lib

CONFIGS = configs.NAMES
SHARED = 'shared'
SHARED_ARTEFACTS = ('audio_embedding', 'classifiers', 'statistics.json')
CELL_FILE = 'cell.json'
PROGRESS_FILE = 'progress.jsonl'


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


def copy_artefacts(shared: str, workdir: str) -> None:
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
      shutil.copy2(source, partial)  # Times kept, as copytree keeps them.
    os.replace(partial, target)


def shared_stages(config: ml_collections.ConfigDict) -> tuple[inputs_lib.Inputs, dict[str, Any]]:
  """The stage artefacts every cell copies, in `config.workdir` (the experiment's shared/), trained when missing.

  The directory records the run identity of the config they were trained for (workdir.accept_run): when the
  experiment is run again with a config that differs beyond train.* fields (e.g. after a change of the default
  config), the earlier artefacts are set aside (`<name>.stale-config`) and trained again, so no new cell gets the
  stages of another config. (A shared/ written before this record existed is taken to be of the current config.)

  Returns:
    The loader of the data (one for the stages and every cell: cells differ in seed and losses, not in data) and
    the classifiers' test accuracies.
  """
  shared = config.workdir
  os.makedirs(shared, exist_ok=True)
  workdir_lib.accept_run(config, shared)
  if not all(os.path.exists(os.path.join(shared, a)) for a in SHARED_ARTEFACTS):
    logging.info('[experiment] the shared stages: data, audio embedding, classifiers, statistics in %s', shared)
  stages.ensure_data(config)
  inputs = inputs_lib.Inputs(config)
  metric = stages.ensure_audio_embedding(config, shared, inputs)
  classifiers = stages.ensure_classifiers(config, shared, inputs)['metrics']
  stages.ensure_statistics(config, shared, metric, inputs)
  return inputs, classifiers


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


def _cell_seconds(name: str, events: list[dict[str, Any]]) -> dict[str, float]:
  """The seconds that cell `name` spent training (over every run that trained it) and in its evaluation."""
  seconds = {'train': 0.0, 'eval': 0.0}
  for event in events:
    if event.get('cell') == name and event['event'] in ('trained', 'stopped', 'evaluated'):
      seconds['eval' if event['event'] == 'evaluated' else 'train'] += event['seconds']
  return seconds


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
    workdir.WorkdirError: a cell of the directory was trained with another config (before any work).
  """
  overrides = dict(overrides or {})
  if not configs or not seeds:
    raise config_lib.ConfigError('An experiment needs at least one config and one seed.')
  cells = [(c, s) for s in seeds for c in configs]  # Seed by seed: every config has a first seed early.
  # Every config is checked before any work.
  configs_by_cell = {
      (c, s): cell_config(c, size, s, overrides, os.path.join(experiment_dir, cell_name(c, s))) for c, s in cells
  }
  for (c, s), config in configs_by_cell.items():  # A cell trained with another config would join the table unseen.
    try:
      workdir_lib.run_config(config.workdir, config)
    except workdir_lib.WorkdirError as e:
      raise workdir_lib.WorkdirError(
          f'The cell {cell_name(c, s)} of {experiment_dir} was trained with another config than this run gives it '
          f'({e}). Use a new --experiment_dir for the new config, or the overrides and version of that run.') from e
  os.makedirs(experiment_dir, exist_ok=True)
  files.check_writable(experiment_dir, 'experiment directory')
  os.makedirs(results_dir, exist_ok=True)
  files.check_writable(results_dir, 'results directory')

  shared = os.path.join(experiment_dir, SHARED)
  start = time.time()
  inputs, classifiers = shared_stages(cell_config('aux', size, 0, overrides, shared))
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
  try:
    for number, (c, s) in enumerate(cells, 1):
      config = configs_by_cell[(c, s)]
      name, workdir = cell_name(c, s), config.workdir
      done = _finished(os.path.join(workdir, CELL_FILE), config.train.num_steps)
      if done is not None:
        logging.info('[experiment] cell %d/%d %s: finished earlier, skipped.', number, len(cells), name)
        records.append(done['record'])
        continue
      copy_artefacts(shared, workdir)
      from_step = _checkpoint_step(workdir)
      if from_step < config.train.num_steps:
        logging.info('[experiment] cell %d/%d %s: training %s from step %d to %d.', number, len(cells), name,
                     config.name, from_step, config.train.num_steps)
        start = time.time()
        try:
          train.train(config, workdir, inputs)
        except BaseException as e:
          if preemption.stop_behind(e) is None:
            raise
          _log_event(experiment_dir, cell=name, event='stopped', from_step=from_step, to_step=_checkpoint_step(workdir),
                     seconds=round(time.time() - start, 1))
          raise
        _log_event(experiment_dir, cell=name, event='trained', from_step=from_step, to_step=config.train.num_steps,
                   seconds=round(time.time() - start, 1))
      logging.info('[experiment] cell %d/%d %s: evaluating.', number, len(cells), name)
      start = time.time()
      summary = evaluate.evaluate(config, workdir, overwrite=True, inputs=inputs)
      _log_event(experiment_dir, cell=name, event='evaluated', seconds=round(time.time() - start, 1))
      record = table_lib.cell_record(name, config, summary, _cell_seconds(name, read_events(experiment_dir)))
      files.write_json(os.path.join(workdir, CELL_FILE), {
          'record': record,
          'reference_rows': table_lib.reference_rows(summary)
      }, checksum=True)
      records.append(record)
      logging.info('[experiment] cell %d/%d %s done: %s', number, len(cells), name, json.dumps(record['measures']))
      # The table so far, after every cell: an interrupted experiment still shows what it has.
      _write_results(records, len(cells), classifiers, experiment_dir, results_dir, experiment_info, None)

  except BaseException as e:
    if preemption.stop_behind(e) is None:
      raise
    # A stop between cells (or after a cell's record, before its table): the table of the cells finished so far.
    if records:
      _write_results(records, len(cells), classifiers, experiment_dir, results_dir, experiment_info, None)
    raise
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
  table = table_lib.build(records, reference_rows, classifiers, read_events(experiment_dir), {
      **info, 'complete': len(records) == num_cells,
      'num_cells': num_cells
  }, machine=_machine(), versions=_versions())
  return write_table(table, results_dir, readme)


def write_table(table: dict[str, Any], results_dir: str, readme: str | None) -> dict[str, Any]:
  """<results_dir>/table1.json and table1.md of `table`, and the README's block if `readme`; returns `table`."""
  files.write_json(os.path.join(results_dir, 'table1.json'), table)
  markdown = table_lib.to_markdown(table)
  files.write_text(os.path.join(results_dir, 'table1.md'), markdown)
  if readme:
    table_lib.update_readme(readme, markdown)
  return table


def merge(paths: list[str], results_dir: str, readme: str | None) -> dict[str, Any]:
  """The tables (table1.json files) of an experiment run in parts, merged into one (`table.merge`) and written as
  `run` writes its table; nothing is trained.

  Raises:
    files.CorruptFileError: a file that is not a table1.json.
    config_lib.ConfigError: a file that cannot be read, or tables that cannot be merged (naming the field).
  """
  tables = []
  for path in paths:
    try:
      table = files.read_json(path)
    except OSError as e:
      raise config_lib.ConfigError(f'{path} (--merge) cannot be read: {e.strerror or e}.') from e
    if not isinstance(table, dict) or 'cells' not in table or table.get('schema_version') != table_lib.SCHEMA_VERSION:
      raise files.CorruptFileError(f'{path} is not a table1.json of schema {table_lib.SCHEMA_VERSION} '
                                   '(face2music experiment writes them).')
    tables.append(table)
  return write_table(table_lib.merge(tables, paths), results_dir, readme)


def _machine() -> dict[str, Any]:
  """The machine the cells ran on: CPU, cores, platform and JAX devices (table1.json's 'machine')."""
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
  """The versions of the packages that the measures depend on, and this package's commit (table1.json's 'versions')."""
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
