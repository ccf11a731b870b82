"""The GAN training loop: prerequisite stages, data, the jitted step (train_step.py), logging, checkpoints, SIGTERM.

The GAN itself (its state, networks and eval-mode generator) is in gan.py.
"""

import contextlib
import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from scipy import special
from jax.experimental import multihost_utils

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import loops
from face2music_jax import losses
from face2music_jax import parallel
from face2music_jax import preemption
from face2music_jax import progress
from face2music_jax import stages
from face2music_jax import summaries as summaries_lib
from face2music_jax import workdir as workdir_lib
from face2music_jax.audio import wav as wav_lib
from face2music_jax.gan import Models, TrainState, make_generate, to_host
from face2music_jax.train_step import compile_train_step
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.data import sampling
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models import discriminator as d_lib
from face2music_jax.models import generator as g_lib

# Where the time of the last training command went, phase by phase (progress.PhaseTimer), in the work directory.
TIMING_FILE = 'timing.json'


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf; the message names the step and the losses."""


def write_sample_wavs(directory: str, audio: np.ndarray, names: list[str], sample_rate: int) -> None:
  """Writes each clip as `<directory>/<name>.wav` (32-bit float, unclipped); WriteError naming a file that fails."""
  for name, clip in zip(names, audio):
    wav_lib.write_wav(os.path.join(directory, f'{name}.wav'), clip, sample_rate, subtype='FLOAT')


def _truncate_jsonl(path: str, step: int) -> None:
  """Drops metric lines written after `step` by a run that was interrupted before its next checkpoint.

  A run killed while appending may have left a partial last line: it is dropped too. The file is replaced
  atomically, so a kill during this rewrite loses nothing.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record['step'] <= step:
        kept.append(json.dumps(record) + '\n')
  files.write_text(path, ''.join(kept))


def train(config: ml_collections.ConfigDict, workdir: str, inputs: inputs_lib.Inputs | None = None) -> TrainState:
  """Runs the missing prerequisite stages, then trains the GAN to config.train.num_steps, resuming if possible.

  Before anything is written, the config is checked (every field, and the batch size against the devices), the
  work directory is locked (process 0) and the config is compared with the run the directory holds
  (workdir.accept_run). Writes to workdir: run.json, config.json, checkpoints/, TensorBoard events, metrics.jsonl,
  samples/step_<N>/*.wav. Resumes from the newest checkpoint that verifies (checkpoint.restore_latest).

  Args:
    config: the run's config.
    workdir: the work directory.
    inputs: the loader of the data, shared by the stages and the training data; reused if it serves the config's
      data (`data.inputs.for_config`), e.g. by the experiment runner's cells.

  Returns:
    The final state.

  Raises:
    preemption.Preempted: SIGTERM stopped the run before its last step (in the training loop, after saving a
      checkpoint).
    workdir_lib.WorkdirError: another command holds the work directory, or it holds a run of another config.
    files.WriteError: a file could not be written; the message says that the last checkpoint is intact.
  """
  with preemption.handling_sigterm() as sigterm:
    config_lib.validate(config)
    parallel.local_batch_size(config.train.batch_size)  # Divisible over the devices, before any stage runs.
    files.check_writable(workdir, 'work directory')
    # The data are built there (under $FACE2MUSIC_CACHE by default): a file in its place, or no permission, is named
    # now rather than deep in the notes' builder.
    files.check_writable(config.data_dir, 'data directory (config.data_dir; $FACE2MUSIC_CACHE/data by default)')
    os.makedirs(workdir, exist_ok=True)
    # Process 0 speaks for the run: the others run with it or not at all.
    with workdir_lib.locked(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
      return _train(config, workdir, sigterm, inputs)


def _sample_inputs(config: ml_collections.ConfigDict, inputs: inputs_lib.Inputs,
                   mesh) -> tuple[jax.Array, jax.Array, list[str]]:
  """The sample notes' inputs: held-out faces of different identities, each at every listening pitch.

  Returns:
    (face embeddings [N, E] and pitch classes [N], replicated; the notes' names 'face_XX_midiYY').
  """
  test_faces = inputs.faces('test')
  sample_faces = sampling.round_robin_by_identity(test_faces['name'], config.train.num_sample_faces)
  sample_midi = np.repeat(config_lib.listening_pitches(config), len(sample_faces))
  z = parallel.replicate(mesh, np.tile(test_faces['embedding'][sample_faces],
                                       (len(sample_midi) // len(sample_faces), 1)))
  pitch = parallel.replicate(mesh, config_lib.pitch_class(config, sample_midi).astype(np.int32))
  names = [f'face_{i % len(sample_faces):02d}_midi{m}' for i, m in enumerate(sample_midi)]
  return z, pitch, names


def _fit_face_variables(local_faces: np.ndarray, components: int, fixed_norm: bool) -> dict[str, dict[str, np.ndarray]]:
  """G's variables fitted on the training faces of every process, from this process's share: 'face_space' with
  `components` > 0 (model.harmonic.face_components), 'face_norm' (the standardisation's statistics) with `fixed_norm`
  (model.harmonic.face_norm 'fixed'). The shares' statistics are gathered and combined, and process 0's result is
  the one every process uses (bit-identical values, as the replicated variables need, whatever each host's linear
  algebra)."""
  statistics = g_lib.face_statistics(local_faces)
  if jax.process_count() > 1:
    gathered = multihost_utils.process_allgather({k: np.asarray(v, np.float32) for k, v in statistics.items()})
    parts = [{k: np.asarray(v[i], np.float64) for k, v in gathered.items()} for i in range(jax.process_count())]
    statistics = g_lib.combine_face_statistics(parts)
  fitted = {}
  if components:
    fitted['face_space'] = g_lib.face_space(statistics, components)
  if fixed_norm:
    fitted['face_norm'] = g_lib.face_norm_statistics(statistics, fitted.get('face_space'))
  if jax.process_count() > 1:
    fitted = multihost_utils.broadcast_one_to_all(fitted)
  return {name: {k: np.asarray(v) for k, v in part.items()} for name, part in fitted.items()}


def _fit_aux_input_scale(config: ml_collections.ConfigDict, metric: embedding_lib.AudioMetric,
                         notes: np.ndarray) -> dict[str, np.ndarray]:
  """A's input scale (d_lib.fit_aux_input_scale) from phi(y) of all training notes (every process reads them all,
  so any number of processes fits the same scale); process 0's is the one every process uses, as the replicated
  variables need bit-identical values whatever each host's arithmetic."""
  phi = jax.jit(functools.partial(embedding_lib.phi, config=config))
  real_phi = loops.batched(lambda a: phi(metric, a), notes, batch_size=256)
  scale = d_lib.fit_aux_input_scale(real_phi, config.mfcc.n_mfcc)
  if jax.process_count() == 1:
    return scale
  return {k: np.asarray(v) for k, v in multihost_utils.broadcast_one_to_all(scale).items()}


def family_statistics(config: ml_collections.ConfigDict, metric: embedding_lib.AudioMetric,
                      notes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The family-marginal loss's statistics (losses.FAMILY_KEYS) from phi(y) of the training notes: each NSynth
  family's centroid (zeros where the notes hold none), which families are present, and the scale of the soft
  assignments at which they name the notes' own families with the highest likelihood (calibrated). Every process
  reads all the notes, so all compute the same values; process 0's are the ones every process uses (replicated
  values must be bit-identical)."""
  phi = jax.jit(functools.partial(embedding_lib.phi, config=config))
  real_phi = np.asarray(loops.batched(lambda a: phi(metric, a), notes['audio'], batch_size=256), np.float64)
  family = np.asarray(notes['family'])
  k = len(config_lib.NSYNTH_FAMILIES)
  present = np.array([np.any(family == i) for i in range(k)])
  if present.sum() < 2:
    raise ValueError(f'train.family_marginal_weight needs training notes of at least 2 families; they hold '
                     f'{int(present.sum())}.')
  centroids = np.zeros((k, real_phi.shape[1]))
  for i in np.flatnonzero(present):
    centroids[i] = real_phi[family == i].mean(axis=0)
  # The scale at which the soft assignments are calibrated: the maximum likelihood of the notes' own families, over
  # a grid of fractions of their RMS distance to their family's centroid.
  d2 = np.maximum(
      np.sum(real_phi**2, axis=1)[:, None] - 2 * real_phi @ centroids.T + np.sum(centroids**2, axis=1)[None], 0)
  rms = np.sqrt(np.mean(d2[np.arange(len(family)), family]))
  logits = np.where(present, -d2, -np.inf)

  def log_likelihood(scale):
    z = logits / (2 * scale**2)
    return np.mean(z[np.arange(len(family)), family] - special.logsumexp(z, axis=1))

  scale = max(rms * np.geomspace(0.05, 2.0, 64), key=log_likelihood)
  out = {
      'family_centroids': centroids.astype(np.float32),
      'family_present': present.astype(np.float32),
      'family_scale': np.float32(scale)
  }
  if jax.process_count() == 1:
    return out
  return {key: np.asarray(v) for key, v in multihost_utils.broadcast_one_to_all(out).items()}


def _statistics_shapes(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of the statistics the train step takes: Eq. 1's constants, and the families' where they are used."""
  shapes = {key: jax.ShapeDtypeStruct((), np.float32) for key in losses.statistics_keys(config.train.metric_features)}
  if config.train.family_marginal_weight > 0:
    k, f = len(config_lib.NSYNTH_FAMILIES), embedding_lib.phi_dim(config)
    shapes.update(family_centroids=jax.ShapeDtypeStruct((k, f), np.float32), family_present=jax.ShapeDtypeStruct(
        (k,), np.float32), family_scale=jax.ShapeDtypeStruct((), np.float32))
  if config.train.family_faces_center:
    shapes['family_faces_center'] = jax.ShapeDtypeStruct((config.data.embedding_dim,), np.float32)
  return shapes


def _train(config: ml_collections.ConfigDict, workdir: str, sigterm: preemption.Handler,
           inputs: inputs_lib.Inputs | None) -> TrainState:
  is_main = jax.process_index() == 0
  timer = progress.PhaseTimer()
  identity = workdir_lib.accept_run(config, workdir)
  if is_main:
    files.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))

  stages.ensure_data(config)
  inputs = inputs_lib.for_config(config, inputs)
  # This process's share first: a run whose face files do not split over its hosts fails before any stage trains.
  data = inputs_lib.TrainingData(config, inputs)
  # Read before the stages, so that a missing or corrupt faces file fails in seconds.
  center = stages.ensure_family_faces_center(config, workdir)
  timer.lap('data')
  mesh = parallel.make_mesh()
  models = Models(config)
  # Compiled now, before the stages, so that a step that cannot fit in memory fails in seconds, not after them.
  logging.info('Compiling the train step...')
  step_fn = _compile_within_memory(compile_train_step(models, mesh), models, config, data)
  timer.lap('compile train step')
  metric = stages.ensure_audio_embedding(config, workdir, inputs)
  timer.lap('stage: audio embedding')
  stages.ensure_classifiers(config, workdir, inputs)
  timer.lap('stage: classifiers')
  stats = stages.ensure_statistics(config, workdir, metric, inputs)
  if config.train.family_marginal_weight > 0:
    stats.update(family_statistics(config, metric, inputs.notes('train')))
  if center is not None:
    stats['family_faces_center'] = center
  timer.lap('stage: statistics')

  root = jax.jit(lambda: jax.random.key(config.seed), out_shardings=parallel.replicated(mesh))()
  state = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(root)
  manager = checkpoint.manager(os.path.join(workdir, 'checkpoints'), config.train.keep_checkpoints)
  saver = checkpoint.Saver(manager)
  state, latest = checkpoint.restore_latest(manager, state, identity['verified_from'])
  checkpoint.prune(manager, config.train.keep_checkpoints)
  if latest is not None:
    logging.info('Resumed from the checkpoint at step %d.', latest)
  else:  # Fitted once before the first step and kept in the state (checkpointed with it).
    fixed_norm = config.model.generator == 'harmonic' and config.model.harmonic.face_norm == 'fixed'
    if 'face_space' in state.g or fixed_norm:
      # G's projection of the faces (model.harmonic.face_components) and its standardisation's statistics
      # (model.harmonic.face_norm 'fixed').
      fitted = _fit_face_variables(data.faces, config.model.harmonic.face_components if 'face_space' in state.g else 0,
                                   fixed_norm)
      g = dict(state.g)
      if 'face_space' in fitted:
        g['face_space'] = parallel.replicate(mesh, fitted['face_space'])
      if fixed_norm:
        g['batch_stats'] = {**g['batch_stats'], 'face_norm': parallel.replicate(mesh, fitted['face_norm'])}
      state = state.replace(g=g)
    if 'input_scale' in state.aux:  # A's weights of phi's MFCC coefficients (train.aux_mfcc_scale).
      scale = _fit_aux_input_scale(config, metric, inputs.notes('train')['audio'])
      state = state.replace(aux={**state.aux, 'input_scale': parallel.replicate(mesh, scale)})
  start_step = int(to_host(state.step))
  if start_step >= config.train.num_steps:
    logging.warning(
        'The checkpoint is at step %d, at or past config.train.num_steps = %d: nothing to train (raise '
        '--config.train.num_steps to train on).', start_step, config.train.num_steps)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if is_main:
    _truncate_jsonl(metrics_path, start_step)
  timer.lap('init and restore')

  metric_r = parallel.replicate(mesh, metric)
  stats_r = parallel.replicate(mesh, {k: np.asarray(v, np.float32) for k, v in stats.items()})
  sample_z, sample_pitch, sample_names = _sample_inputs(config, inputs, mesh)
  generate = make_generate(models.g)
  # TensorBoard on process 0 only; the progress line below is the log.
  with files.writing(os.path.join(workdir, summaries_lib.PATTERN)):
    writer = _summary_writer(workdir, is_main)
  summaries = functools.partial(files.writing, os.path.join(workdir, summaries_lib.PATTERN))
  t = config.train
  timer_start, timer_step = time.time(), start_step
  progress_bar = progress.bar(t.num_steps, 'train', initial=start_step)
  try:
    with sigterm.deferred():
      batch = parallel.global_batch(mesh, data.batch(start_step)) if start_step < t.num_steps else None
      for step in range(start_step, t.num_steps):
        state, metrics = step_fn(state, batch, metric_r, stats_r, root)
        done = step + 1
        if step == start_step:
          jax.block_until_ready(metrics)
          logging.info('The first step took %.1f s.', time.time() - timer_start)
          timer_start, timer_step = time.time(), done
        progress_bar.update(1)
        # Dispatch is asynchronous: the next batch is assembled while this step runs, before anything below waits
        # for the step's results (the step never waits on its input).
        if done < t.num_steps:
          batch = parallel.global_batch(mesh, data.batch(done))
        if t.nonfinite == 'stop' and not float(to_host(metrics['finite'])):
          values = {k: float(v) for k, v in to_host(metrics).items()}
          raise NonFiniteError(f'Non-finite loss or gradient at step {done}: {values}. The last good checkpoint is '
                               f'kept (step {manager.latest_step()}); lower the learning rates or set '
                               f"config.train.nonfinite='skip'.")
        if done % t.log_every == 0 or done == t.num_steps:
          values = {k: float(v) for k, v in to_host(metrics).items()}
          rate = (done - timer_step) / (time.time() - timer_start)
          values['steps_per_second'] = rate
          with summaries():
            writer.write_scalars(done, {f'train/{k}': v for k, v in values.items()})
          if is_main:
            files.append_text(metrics_path, json.dumps({'step': done, **values}) + '\n')
          logging.info('step %d/%d  d_loss %.4f  g_loss %.4f%s  %.2f steps/s', done, t.num_steps, values['d_loss'],
                       values['g_loss'], f"  metric {values['metric_loss']:.4f}" if 'metric_loss' in values else '',
                       rate)
          progress_bar.set_postfix(d_loss=f"{values['d_loss']:.3f}", g_loss=f"{values['g_loss']:.3f}", refresh=False)
          timer_start, timer_step = time.time(), done
        if done % t.sample_every == 0 or done == t.num_steps:
          timer.lap('train steps')
          clips = to_host(generate(state.g_ema or state.g, sample_z, sample_pitch))
          if is_main:
            write_sample_wavs(os.path.join(workdir, 'samples', f'step_{done}'), clips, sample_names,
                              config.audio.sample_rate)
          timer.lap('samples')
        if done % t.checkpoint_every == 0 or done == t.num_steps or sigterm.requested:
          timer.lap('train steps')
          saver.save(done, state)
          timer.lap('checkpoints')
        if sigterm.requested and done < t.num_steps:
          saver.wait()
          _write_timing(workdir, timer, start_step, done)
          raise preemption.Preempted(
              f'Stopped at step {done} after SIGTERM or Ctrl-C; the checkpoint is saved. Rerun to '
              'resume.')
      saver.wait()
      with summaries():
        writer.close()
      timer.lap('checkpoints')
  except files.WriteError as e:
    progress_bar.close()
    _stopped(saver, writer)
    raise files.WriteError(f'{e} Training stopped: {saver.last_complete()}.') from e
  except BaseException:
    progress_bar.close()
    _stopped(saver, writer)
    raise
  progress_bar.close()
  if is_main:
    logging.info('Where the time went:\n%s', timer.table())
  _write_timing(workdir, timer, start_step, config.train.num_steps)
  return state


def _write_timing(workdir: str, timer: progress.PhaseTimer, start_step: int, end_step: int) -> None:
  """<workdir>/timing.json: the seconds of each phase of the run from `start_step` to `end_step` (process 0's;
  every process calls it, as files.write_json)."""
  files.write_json(os.path.join(workdir, TIMING_FILE), {
      'seconds': timer.seconds,
      'start_step': start_step,
      'end_step': end_step
  })


class MemoryLimitError(MemoryError):
  """The train step of the config cannot fit in this machine's memory; the message gives the estimate."""


def available_memory() -> tuple[int, str] | None:
  """(bytes a process may still use on its devices, where that figure comes from); None if unknown.

  On accelerators, the first local device's memory limit (XLA's allocator); on the CPU, the host's available memory
  (MemAvailable of /proc/meminfo, Linux).
  """
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    return (int(stats['bytes_limit']), f'{device.device_kind} memory') if 'bytes_limit' in stats else None
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024, 'available host memory'
  except OSError:
    pass
  return None


def _compile_within_memory(step_fn, models: Models, config: ml_collections.ConfigDict, data: inputs_lib.TrainingData):
  """The train step compiled for the config's shapes, after checking XLA's estimate of its memory against what the
  machine has.

  The estimate (`memory_analysis` of the compiled step: its arguments, outputs and temporaries, per device, times
  the local devices on the CPU, where they share the host's memory, plus the batch the host assembles) is known
  before any stage runs, so that a batch that cannot fit fails at once, with the figures, rather than with a
  MemoryError after the stages.

  Raises:
    MemoryLimitError: the estimate exceeds the available memory.
  """
  c = config
  batch = config.train.batch_size
  metric = stages.audio_metric_shapes(c)
  shapes = {
      'embedding': jax.ShapeDtypeStruct((c.train.d_steps, batch, data.faces.shape[-1]), data.faces.dtype),
      'audio': jax.ShapeDtypeStruct((c.train.d_steps, batch) + data.audio.shape[1:], data.audio.dtype),
      'pitch': jax.ShapeDtypeStruct((c.train.d_steps, batch), np.int32),
  }
  stats = _statistics_shapes(c)
  root = jax.eval_shape(lambda: jax.random.key(0))
  state = jax.eval_shape(models.init, root)
  try:
    compiled = step_fn.lower(state, shapes, metric, stats, root).compile()
  except (OverflowError, MemoryError) as e:  # E.g. batch**2 / 2 pairs of the metric loss beyond int32 indices.
    raise MemoryLimitError(f'The train step cannot be built at config.train.batch_size = {batch} ({type(e).__name__}: '
                           f'{e}): lower config.train.batch_size.') from e
  available = available_memory()
  analysis = compiled.memory_analysis()
  if available is None or analysis is None:
    return compiled
  per_device = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes -
                analysis.alias_size_in_bytes)
  on_cpu = jax.local_devices()[0].platform == 'cpu'
  devices = jax.local_device_count() if on_cpu else 1
  # On the CPU the devices' memory is the host's, which also holds the numpy batch the step's inputs come from.
  host_batch = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in shapes.values()) // jax.process_count()
  needed = per_device * devices + (host_batch if on_cpu else 0)
  gib = 2.0**30
  logging.info('Memory of the train step: %.2f GiB estimated, %.1f GiB %s.', needed / gib, available[0] / gib,
               available[1])
  if needed > available[0]:
    raise MemoryLimitError(
        f'The train step needs about {needed / gib:.1f} GiB (XLA\'s estimate at config.train.batch_size = {batch}: '
        f'{per_device / gib:.1f} GiB per device x {devices} device(s), and the host\'s batch), but there are '
        f'{available[0] / gib:.1f} GiB of {available[1]}: lower config.train.batch_size.')
  return compiled


def _summary_writer(workdir: str, is_main: bool) -> summaries_lib.ScalarWriter | summaries_lib.NoSummaries:
  """TensorBoard scalar summaries (summaries.py, without TensorFlow) on process 0."""
  if not is_main:
    return summaries_lib.NoSummaries()
  try:
    return summaries_lib.ScalarWriter(workdir)
  except ImportError as e:
    if preemption.stop_behind(e) is not None:  # SIGTERM while the import ran: the stop, not a missing library.
      raise
    logging.warning('No TensorBoard summaries (%s); metrics.jsonl has every logged value.', e)
    return summaries_lib.NoSummaries()


def _stopped(saver: checkpoint.Saver, writer: summaries_lib.ScalarWriter | summaries_lib.NoSummaries) -> None:
  """When the loop stopped on an error (or SIGTERM), which is the one to report: lets a save in flight complete
  and closes the summaries, reporting their failures in the log only."""
  try:
    saver.wait()
  except checkpoint.CheckpointError as e:
    logging.error('%s', e)
  try:
    writer.close()
  except OSError as e:
    logging.error('Could not write the TensorBoard summaries: %s', e)
