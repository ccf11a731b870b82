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
import tensorflow as tf
from absl import logging
from clu import metric_writers

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import parallel
from face2music_jax import preemption
from face2music_jax import progress
from face2music_jax import stages
from face2music_jax import workdir as workdir_lib
from face2music_jax.audio import wav as wav_lib
from face2music_jax.gan import Models, TrainState, make_generate, to_host
from face2music_jax.train_step import compile_train_step
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.data import sampling


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
  pitch = parallel.replicate(mesh, (sample_midi - config.audio.pitch_min).astype(np.int32))
  names = [f'face_{i % len(sample_faces):02d}_midi{m}' for i, m in enumerate(sample_midi)]
  return z, pitch, names


def _train(config: ml_collections.ConfigDict, workdir: str, sigterm: preemption.Handler,
           inputs: inputs_lib.Inputs | None) -> TrainState:
  is_main = jax.process_index() == 0
  identity = workdir_lib.accept_run(config, workdir)
  if is_main:
    files.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))

  stages.ensure_data(config)
  inputs = inputs_lib.for_config(config, inputs)
  # This process's share first: a run whose face files do not split over its hosts fails before any stage trains.
  data = inputs_lib.TrainingData(config, inputs)
  metric = stages.ensure_audio_embedding(config, workdir, inputs)
  stages.ensure_classifiers(config, workdir, inputs)
  stats = stages.ensure_statistics(config, workdir, metric, inputs)

  mesh = parallel.make_mesh()
  models = Models(config)
  root = jax.jit(lambda: jax.random.key(config.seed), out_shardings=parallel.replicated(mesh))()
  state = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(root)
  manager = checkpoint.manager(os.path.join(workdir, 'checkpoints'), config.train.keep_checkpoints)
  saver = checkpoint.Saver(manager)
  state, latest = checkpoint.restore_latest(manager, state, identity['verified_from'])
  checkpoint.prune(manager, config.train.keep_checkpoints)
  if latest is not None:
    logging.info('Resumed from the checkpoint at step %d.', latest)
  start_step = int(to_host(state.step))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if is_main:
    _truncate_jsonl(metrics_path, start_step)

  step_fn = compile_train_step(models, mesh)
  metric_r = parallel.replicate(mesh, metric)
  stats_r = parallel.replicate(mesh, {k: np.float32(v) for k, v in stats.items()})
  sample_z, sample_pitch, sample_names = _sample_inputs(config, inputs, mesh)
  generate = make_generate(models.g)
  # TensorBoard on process 0 only; the progress line below is the log.
  writer = metric_writers.SummaryWriter(workdir) if is_main else metric_writers.MultiWriter([])
  # The summary writer's failed writes surface as TensorFlow errors, when it writes or flushes.
  summaries = functools.partial(files.writing, os.path.join(workdir, 'events.out.tfevents.*'), (tf.errors.OpError,))
  t = config.train
  timer_start, timer_step = time.time(), start_step
  progress_bar = progress.bar(t.num_steps, 'train', initial=start_step)
  try:
    with sigterm.deferred():
      batch = parallel.global_batch(mesh, data.batch(start_step)) if start_step < t.num_steps else None
      if start_step < t.num_steps:
        logging.info('Compiling the train step (the first step waits for it)...')
      for step in range(start_step, t.num_steps):
        state, metrics = step_fn(state, batch, metric_r, stats_r, root)
        done = step + 1
        if step == start_step:
          jax.block_until_ready(metrics)
          logging.info('Compiled; the first step took %.1f s.', time.time() - timer_start)
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
          clips = to_host(generate(state.g, sample_z, sample_pitch))
          if is_main:
            write_sample_wavs(os.path.join(workdir, 'samples', f'step_{done}'), clips, sample_names,
                              config.audio.sample_rate)
        if done % t.checkpoint_every == 0 or done == t.num_steps or sigterm.requested:
          saver.save(done, state)
        if sigterm.requested and done < t.num_steps:
          saver.wait()
          raise preemption.Preempted(
              f'Stopped at step {done} after SIGTERM or Ctrl-C; the checkpoint is saved. Rerun to '
              'resume.')
      saver.wait()
      with summaries():
        writer.flush()
  except files.WriteError as e:
    progress_bar.close()
    _stopped(saver, writer)
    raise files.WriteError(f'{e} Training stopped: {saver.last_complete()}.') from e
  except BaseException:
    progress_bar.close()
    _stopped(saver, writer)
    raise
  progress_bar.close()
  return state


def _stopped(saver: checkpoint.Saver, writer: metric_writers.MetricWriter) -> None:
  """When the loop stopped on an error (or SIGTERM), which is the one to report: lets a save in flight complete
  and flushes the summaries, reporting their failures in the log only."""
  try:
    saver.wait()
  except checkpoint.CheckpointError as e:
    logging.error('%s', e)
  try:
    writer.flush()
  except (OSError, tf.errors.OpError) as e:
    logging.error('Could not flush the TensorBoard summaries: %s', e)
