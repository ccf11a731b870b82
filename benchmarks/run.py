r"""Speed and memory of face2music_jax against this machine's limit and the obvious alternatives.

  python -m benchmarks.run                      # everything; JSON to <cache>/benchmarks/results.json + a table
  python -m benchmarks.run --sizes=small --rss_steps=0 --eval_workdir=~/.cache/face2music_jax/work/aux_small
  python -m benchmarks.run --sizes=paper --configs=aux --dtype=bfloat16 --train_step_only
  python -m benchmarks.run --exported=data.npz  # data of `face2music export_data`: TensorFlow is not imported

Sections (keys of the JSON):
  ceiling         matmul FLOP/s through XLA in --dtype (median of repeats after warm-up).
  train_step      per size and config, with config.train.dtype = --dtype: examples/s (median of timed steps,
                  block_until_ready), compile time, the step's FLOPs from XLA's cost analysis and the achieved
                  fraction of the ceiling, the compiled step's memory (XLA's memory analysis) and the device's
                  peak memory in use where the backend reports it (GPUs, TPUs).
  step_profile    where the `aux` step's time goes: its parts (G, D, phi, A) timed alone, same batch.
  mfcc            the JAX MFCC on a batch of notes vs librosa.feature.mfcc clip by clip: ratio and error.
  synthesizer     the harmonic-plus-noise synthesiser's forward + backward from raw controls vs its PyTorch port
                  in DDSP's reference formulation (benchmarks/ddsp_torch.py; needs torch), timed in turn; how far
                  apart their notes and gradients are.
  metric_loss     the metric preservation loss with its gradient at several batch sizes, and its share of the
                  `aux` step of each size.
  input_pipeline  examples/s that the GAN's input (inputs.TrainingData.batch + global_batch) delivers vs the step.
  default_run     peak resident memory of `run_train.py --config=configs/aux.py` (stages + rss_steps steps).
  evaluation      seconds of evaluate() for N translations (on the default run's workdir), by phase.

Benchmarks time things; they assert nothing. tests/test_benchmarks.py runs this at the tiny size.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging

from face2music_jax import cli
from face2music_jax import config_lib
from face2music_jax import configs
from face2music_jax import evaluate
from face2music_jax import gan
from face2music_jax import losses
from face2music_jax import parallel
from face2music_jax import stages
from face2music_jax import synthetic
from face2music_jax import train_step
from face2music_jax.audio import mfcc as mfcc_lib
from face2music_jax.audio import synthesis
from face2music_jax.data import exported as exported_lib
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.models import audio_embedding as embedding_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string('out', None, 'JSON output (default: <cache>/benchmarks/results.json).')
flags.DEFINE_list('sizes', ['small', 'paper'], 'Config sizes of the train-step section.')
flags.DEFINE_list('configs', list(configs.NAMES), 'Configs of the train-step section.')
flags.DEFINE_enum(
    'dtype', 'float32', list(config_lib.DTYPES), 'config.train.dtype of every config (the train-step '
    'section, the step profile) and the dtype of the ceiling matmul.')
flags.DEFINE_bool('train_step_only', False, 'Only the ceiling and train-step sections (they need no data; '
                  'scripts/device_check.sh).')
flags.DEFINE_bool(
    'profile_only', False, 'Only the ceiling, train-step and step-profile sections (no data needed), '
    'e.g. to compare --dtype=float32 and bfloat16 part by part.')
flags.DEFINE_string('default_size', 'small', 'Size of the default run (input pipeline, memory, evaluation).')
flags.DEFINE_string('data_dir', None, 'Override config.data_dir (the default data is built there if missing).')
flags.DEFINE_string(
    'exported', None, 'Read the data from this file of `face2music export_data` (config.data.exported) instead of '
    'the data dir: no TensorFlow is imported (e.g. on a machine that has only JAX).')
flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul of the ceiling.')
flags.DEFINE_integer('repeats', 10, 'Timed repeats of the fast sections (matmul, MFCC, synthesiser, metric loss).')
flags.DEFINE_integer('timed_steps', 5, 'Timed train steps per config after the warm-up step.')
flags.DEFINE_integer('mfcc_batch', 64, 'Notes in the MFCC comparison.')
flags.DEFINE_list('metric_batches', ['64', '512'], 'Batch sizes of the metric loss section.')
flags.DEFINE_integer('pipeline_batches', 200, 'Batches drawn in the input pipeline section.')
flags.DEFINE_integer('rss_steps', 300, 'GAN steps of the default run whose peak memory is measured (0: skip).')
flags.DEFINE_integer('eval_translations', 2000, 'N of the evaluation section (0: skip).')
flags.DEFINE_string(
    'eval_workdir', None, 'Trained workdir to evaluate (default: the default run of this '
    'benchmark; needed when --rss_steps=0).')


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
  """Median wall time of fn() (outputs blocked on) over `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def flops_of(compiled: jax.stages.Compiled) -> float:
  """FLOPs of one call from XLA's cost analysis (a dict, or a list of one dict in older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


def _exported_path() -> str:
  """--exported as an absolute path, as the configs, the default run (a child process) and its config.json keep it."""
  return os.path.abspath(os.path.expanduser(FLAGS.exported))


def get_config(name: str, size: str) -> ml_collections.ConfigDict:
  config = importlib.import_module(f'face2music_jax.configs.{name}').get_config(size)
  config.train.dtype = FLAGS.dtype
  if FLAGS.data_dir:
    config.data_dir = FLAGS.data_dir
  if FLAGS.exported:
    config.data.exported = _exported_path()
  return config


def matmul_ceiling(n: int, repeats: int, dtype: str = 'float32') -> dict[str, Any]:
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  product = jax.jit(jnp.matmul)
  seconds = median_seconds(lambda: product(a, b), repeats, warmup=2)
  return {'size': n, 'dtype': dtype, 'seconds': seconds, 'flops_per_second': 2 * n**3 / seconds}


def memory_of(compiled: jax.stages.Compiled) -> dict[str, float]:
  """GiB of the compiled function's arguments, outputs and temporaries (XLA's memory analysis), and the first
  device's peak bytes in use so far where the backend reports it (GPUs and TPUs do; the CPU does not)."""
  result = {}
  analysis = compiled.memory_analysis()
  for key in ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes'):
    if analysis is not None and hasattr(analysis, key):
      result[key.replace('_in_bytes', '_gib')] = getattr(analysis, key) / 2**30
  stats = jax.local_devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    result['device_peak_gib'] = stats['peak_bytes_in_use'] / 2**30
  return result


def _timed_part(fn: Callable[..., Any], args: tuple, repeats: int, ceiling: float) -> dict[str, float]:
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = median_seconds(lambda: compiled(*args), repeats)
  flops = flops_of(compiled)
  return {'seconds': seconds, 'gflops': flops / 1e9, 'fraction_of_ceiling': flops / seconds / ceiling}


def train_step_benchmark(config: ml_collections.ConfigDict, timed_steps: int, ceiling: float) -> dict[str, Any]:
  """One config's jitted step on synthetic data of its batch size, over all devices."""
  mesh = parallel.make_mesh()
  models = gan.Models(config)
  state = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  batch = parallel.global_batch(mesh, synthetic.batch(config, config.train.batch_size, 0))
  metric = parallel.replicate(mesh, synthetic.audio_metric(config))
  stats = parallel.replicate(mesh, synthetic.statistics(config))
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = train_step.compile_train_step(models, mesh).lower(state, batch, metric, stats, rng).compile()
  compile_seconds = time.perf_counter() - start
  flops = flops_of(compiled)

  def step():
    nonlocal state
    state, metrics = compiled(state, batch, metric, stats, rng)  # The state is donated: carried forward.
    return metrics

  seconds = median_seconds(step, timed_steps)
  return {
      'batch_size': config.train.batch_size,
      'generator_dim': config.model.wavegan.dim,
      'dtype': config.train.dtype,
      'memory': memory_of(compiled),
      'step_seconds': seconds,
      'examples_per_second': config.train.batch_size / seconds,
      'compile_seconds': compile_seconds,
      'gflops_per_step': flops / 1e9,
      'fraction_of_ceiling': flops / seconds / ceiling
  }


def step_profile(config: ml_collections.ConfigDict, repeats: int, ceiling: float,
                 step_seconds: float) -> dict[str, Any]:
  """The aux step's parts timed alone (one device, the step's batch): where its time goes."""
  models = gan.Models(config)
  state = jax.jit(models.init)(jax.random.key(0))
  data = synthetic.batch(config, config.train.batch_size, 0)
  z, audio, pitch = (jnp.asarray(data[k][-1]) for k in ('embedding', 'audio', 'pitch'))
  audio2, pitch2 = jnp.concatenate([audio, audio]), jnp.concatenate([pitch, pitch])
  metric = synthetic.audio_metric(config)
  key = jax.random.key(2)

  def g_forward(g_params):
    return models.generate({**state.g, 'params': g_params}, z, pitch, train=True)[0]

  def g_forward_backward(g_params):
    return jax.grad(lambda p: jnp.mean(g_forward(p)))(g_params)

  def d_params_forward_backward(d_params):  # The D update: real and fake notes, gradient w.r.t. D's weights.
    return jax.grad(lambda p: jnp.mean(models.discriminate({**state.d, 'params': p}, audio2, pitch2, key)[0]))(d_params)

  def d_input_forward_backward(x):  # D inside the G update: gradient w.r.t. the generated notes.
    return jax.grad(lambda x: jnp.mean(models.discriminate(state.d, x, pitch, key)[0]))(x)

  def phi_forward(x):
    return embedding_lib.phi(metric, x, config)

  features2 = jax.jit(phi_forward)(audio2)

  def aux_update_forward_backward(aux_params):  # A's update: phi(y) of real and fake notes, gradient w.r.t. A.
    return jax.grad(lambda p: jnp.mean(models.aux.apply({**state.aux, 'params': p}, features2, pitch2)))(aux_params)

  def phi_forward_backward(x):
    return jax.grad(lambda x: jnp.mean(phi_forward(x)))(x)

  parts = {
      'generator_forward': (g_forward, (state.g['params'],)),
      'generator_forward_backward': (g_forward_backward, (state.g['params'],)),
      'discriminator_update_forward_backward_2B': (d_params_forward_backward, (state.d['params'],)),
      'discriminator_input_gradient_B': (d_input_forward_backward, (audio,)),
      'phi_forward_2B': (phi_forward, (audio2,)),
      'phi_forward_backward_B': (phi_forward_backward, (audio,)),
      'aux_discriminator_update_forward_backward_2B': (aux_update_forward_backward, (state.aux['params'],)),
  }
  result = {name: _timed_part(fn, args, repeats, ceiling) for name, (fn, args) in parts.items()}
  for value in result.values():
    value['share_of_step'] = value['seconds'] / step_seconds
  return result


def notes_for(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
  """`count` real test notes of the config's data (cycled if fewer), [count, length] float32."""
  stages.ensure_data(config)
  audio = inputs_lib.for_config(config).notes('test')['audio']
  return np.resize(audio, (count, audio.shape[1])).astype(np.float32)


def mfcc_benchmark(config: ml_collections.ConfigDict, notes: np.ndarray, repeats: int) -> dict[str, Any]:
  m = config.mfcc
  params = dict(sample_rate=config.audio.sample_rate, n_mfcc=m.n_mfcc, n_fft=m.n_fft, hop_length=m.hop_length,
                n_mels=m.n_mels, fmin=m.fmin, fmax=m.fmax, top_db=m.top_db)
  jax_mfcc = jax.jit(lambda a: mfcc_lib.mfcc(a, **params))
  x = jnp.asarray(notes)
  jax_seconds = median_seconds(lambda: jax_mfcc(x), repeats)
  reference_repeats = max(1, repeats // 3)
  librosa_seconds = median_seconds(lambda: mfcc_lib.librosa_mfcc(notes, **params), reference_repeats)
  # One librosa call on the whole batch is faster but not equal: its top_db floor is the batch's, not the clip's.
  batched_seconds = median_seconds(lambda: librosa_batched(notes, params), reference_repeats)
  error = mfcc_lib.relative_error(np.asarray(jax_mfcc(x)), mfcc_lib.librosa_mfcc(notes, **params))
  return {
      'batch_size': len(notes),
      'jax_seconds': jax_seconds,
      'librosa_seconds': librosa_seconds,
      'speedup_vs_librosa': librosa_seconds / jax_seconds,
      'max_relative_error': error,
      'librosa_one_batched_call_seconds': batched_seconds,
      'speedup_vs_librosa_batched_call': batched_seconds / jax_seconds
  }


def librosa_batched(notes: np.ndarray, params: dict[str, Any]) -> np.ndarray:
  return librosa.feature.mfcc(y=notes, sr=params['sample_rate'], n_mfcc=params['n_mfcc'], n_fft=params['n_fft'],
                              hop_length=params['hop_length'], n_mels=params['n_mels'], fmin=params['fmin'],
                              fmax=params['fmax'], htk=False, norm='ortho')


def synthesizer_benchmark(config: ml_collections.ConfigDict, repeats: int) -> dict[str, Any]:
  """The harmonic-plus-noise synthesiser's forward + backward (from the network's raw outputs to the note and back)
  against its PyTorch port in DDSP's reference formulation (benchmarks/ddsp_torch.py), timed in turn, one call of
  each per repeat, at the config's batch and sizes; and how far apart their notes are."""
  try:
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks import ddsp_torch  # pylint: disable=import-outside-toplevel
  except ModuleNotFoundError as e:
    if e.name != 'torch':
      raise
    return {'skipped': 'no PyTorch; bash scripts/install.sh test installs it'}
  h, a = config.model.harmonic, config.audio
  batch, length, frames = config.train.batch_size, a.length, h.frames
  hop = length // frames
  rng = np.random.default_rng(0)
  raw = {
      'amplitude': rng.normal(-1.0, 1.0, (batch, frames, 1)),
      'harmonics': rng.normal(0.0, 1.0, (batch, frames, h.num_harmonics)),
      'noise': rng.normal(-5.0, 1.0, (batch, frames, h.noise_bands)),
      'envelope': rng.normal(0.0, 1.0, (batch, 3))
  }
  raw = {k: v.astype(np.float32) for k, v in raw.items()}
  f0 = synthesis.midi_to_hz(rng.integers(a.pitch_min, a.pitch_max + 1, batch).astype(np.float32))
  cotangent = rng.standard_normal((batch, length)).astype(np.float32)
  options = dict(length=length, sample_rate=a.sample_rate, noise_max=h.noise_max, relative_noise=h.relative_noise,
                 fundamental_floor=h.fundamental_floor)

  def note(raw):
    controls = synthesis.controls(raw, **options)
    return synthesis.synthesize(controls, jnp.asarray(f0), length, a.sample_rate, a.release_s)

  jax_note = jax.jit(note)
  jax_step = jax.jit(lambda raw, cotangent: jax.vjp(note, raw)[1](cotangent))
  raw_jax = {k: jnp.asarray(v) for k, v in raw.items()}
  white = torch.from_numpy(np.asarray(synthesis.white_spectrum(frames + 1, hop), np.complex64))
  release = torch.from_numpy(synthesis.release_window(length, a.sample_rate, a.release_s))
  f0_torch, cotangent_torch = torch.from_numpy(f0), torch.from_numpy(cotangent)

  def torch_step():
    leaves = {k: torch.from_numpy(v).requires_grad_() for k, v in raw.items()}
    ddsp_torch.synthesize(leaves, f0_torch, white, release, **options).backward(cotangent_torch)
    return [leaf.grad for leaf in leaves.values()]

  jax_times, torch_times = [], []
  for i in range(repeats + 1):  # The first round warms both up.
    start = time.perf_counter()
    jax.block_until_ready(jax_step(raw_jax, jnp.asarray(cotangent)))
    middle = time.perf_counter()
    torch_step()
    if i:
      jax_times.append(middle - start)
      torch_times.append(time.perf_counter() - middle)
  want = np.asarray(jax_note(raw_jax))
  with torch.no_grad():
    got = ddsp_torch.synthesize({
        k: torch.from_numpy(v) for k, v in raw.items()
    }, f0_torch, white, release, **options).numpy()
  want_gradients = jax_step(raw_jax, jnp.asarray(cotangent))[0]
  got_gradients = dict(zip(raw, torch_step()))
  gradient_difference = max(
      float(
          np.max(np.abs(got_gradients[k].numpy() - np.asarray(want_gradients[k]))) /
          np.max(np.abs(np.asarray(want_gradients[k])))) for k in raw)
  jax_seconds, torch_seconds = float(np.median(jax_times)), float(np.median(torch_times))
  return {
      'jax_backend': jax.default_backend(),  # PyTorch runs on the CPU.
      'batch_size': batch,
      'length': length,
      'num_harmonics': h.num_harmonics,
      'jax_seconds': jax_seconds,
      'torch_seconds': torch_seconds,
      'speedup_vs_torch': torch_seconds / jax_seconds,
      'torch_threads': torch.get_num_threads(),
      'max_difference_of_peak': float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
      'max_gradient_difference_of_largest': gradient_difference
  }


def metric_loss_benchmark(config: ml_collections.ConfigDict, batch_size: int, repeats: int) -> dict[str, Any]:
  """Loss and its gradient w.r.t. phi(y) (what backpropagates into G), for a batch of random embeddings."""
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(batch_size, config.data.embedding_dim)), jnp.float32)
  phi = jnp.asarray(rng.normal(size=(batch_size, embedding_lib.phi_dim(config))), jnp.float32)
  stats = synthetic.statistics()
  fn = jax.jit(jax.value_and_grad(lambda p: losses.metric_preservation_loss(z, p, stats)))
  return {
      'batch_size': batch_size,
      'pairs': batch_size * (batch_size - 1) // 2,
      'seconds': median_seconds(lambda: fn(phi), repeats)
  }


def input_pipeline_benchmark(config: ml_collections.ConfigDict, num_batches: int) -> dict[str, Any]:
  """The GAN loop's input: a host batch drawn from memory and assembled into global arrays."""
  stages.ensure_data(config)
  start = time.perf_counter()
  data = inputs_lib.TrainingData(config)
  load_seconds = time.perf_counter() - start
  mesh = parallel.make_mesh()
  jax.block_until_ready(parallel.global_batch(mesh, data.batch(0)))
  start = time.perf_counter()
  for step in range(1, num_batches + 1):
    jax.block_until_ready(parallel.global_batch(mesh, data.batch(step)))
  seconds = (time.perf_counter() - start) / num_batches
  return {
      'batch_size': config.train.batch_size,
      'load_seconds': load_seconds,
      'seconds_per_batch': seconds,
      'examples_per_second': config.train.batch_size / seconds
  }


# Runs a command and writes its peak RSS (kilobytes, ru_maxrss of this small process's children) to argv[1]. The
# benchmark's own process is large (compiled paper-size steps); a child forked from it directly would report the
# parent's pages, copied at fork before exec, as its own peak.
_PEAK_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], 'w') as f:
  f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def default_run(config_name: str, size: str, workdir: str, steps: int) -> dict[str, Any]:
  """`run_train.py` in a child process, and its peak resident set size as the kernel counts it."""
  args = [
      sys.executable,
      os.path.join(ROOT, 'run_train.py'), f'--config=configs/{config_name}.py:{size}', f'--workdir={workdir}',
      f'--config.train.num_steps={steps}'
  ]
  if FLAGS.data_dir:
    args.append(f'--config.data_dir={FLAGS.data_dir}')
  if FLAGS.exported:
    args.append(f'--config.data.exported={_exported_path()}')
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    peak_file, log_file = os.path.join(tmp, 'peak_rss'), os.path.join(tmp, 'log')
    with open(log_file, 'w') as log:
      code = subprocess.call([sys.executable, '-c', _PEAK_RSS_WRAPPER, peak_file, *args], cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT)
    if code:
      with open(log_file) as log:
        raise RuntimeError(f'{" ".join(args)} failed ({code}):\n{log.read()[-3000:]}')
    with open(peak_file) as f:
      peak_kib = int(f.read())  # Linux reports kilobytes.
  return {
      'command': ' '.join(args[1:]),
      'steps': steps,
      'wall_seconds': time.perf_counter() - start,
      'peak_rss_gib': peak_kib * 1024 / 2**30
  }


def evaluation_benchmark(config: ml_collections.ConfigDict, workdir: str, n: int) -> dict[str, Any]:
  config.eval.num_translations = n
  start = time.perf_counter()
  summary = evaluate.evaluate(config, workdir, overwrite=True)
  translations = summary['listening']['rows']['translations']
  return {
      'num_translations': n,
      'seconds': time.perf_counter() - start,
      'phase_seconds': summary['seconds'],
      'workdir': workdir,
      'listening': {
          'clips': translations['num_clips'],
          'in_tune_50c': translations['in_tune_50c'],
          'flatness_median': translations['flatness']['median'],
          'distinctness': translations['distinctness']['mean']
      }
  }


def table(results: dict[str, Any]) -> str:
  """A short plain-text summary of the results."""
  c = results['ceiling']
  lines = [
      f"{results['machine']}",
      f"matmul ceiling: {c['flops_per_second'] / 1e9:.0f} GFLOP/s ({c['size']}^3 {c['dtype']})", '',
      f"{'train step':18s} {'batch':>5s} {'ex/s':>8s} {'step s':>8s} {'compile s':>9s} {'GFLOP':>8s} "
      f"{'of ceiling':>10s}"
  ]
  for size, per_config in results['train_step'].items():
    for name, r in per_config.items():
      lines.append(f"{name + ':' + size:18s} {r['batch_size']:5d} {r['examples_per_second']:8.1f} "
                   f"{r['step_seconds']:8.3f} {r['compile_seconds']:9.1f} {r['gflops_per_step']:8.1f} "
                   f"{r['fraction_of_ceiling']:10.1%}")
  for size, parts in results.get('step_profile', {}).items():
    lines += ['', f'aux:{size} step, parts timed alone (share of step, fraction of ceiling):']
    lines += [
        f'  {name:45s} {p["seconds"]:7.3f} s {p["share_of_step"]:6.1%} {p["fraction_of_ceiling"]:6.1%}'
        for name, p in parts.items()
    ]
  if 'mfcc' not in results:  # --train_step_only.
    return '\n'.join(lines)
  m = results['mfcc']
  lines += [
      '', f"MFCC, {m['batch_size']} notes: JAX {m['jax_seconds'] * 1e3:.1f} ms, librosa per clip "
      f"{m['librosa_seconds'] * 1e3:.0f} ms ({m['speedup_vs_librosa']:.0f}x), one batched librosa call "
      f"{m['librosa_one_batched_call_seconds'] * 1e3:.0f} ms ({m['speedup_vs_librosa_batched_call']:.0f}x);"
      f" max relative error {m['max_relative_error']:.1e}"
  ]
  s = results['synthesizer']
  lines.append(f"synthesiser forward + backward: skipped, {s['skipped']}" if 'skipped' in
               s else f"synthesiser forward + backward, {s['batch_size']} notes of {s['num_harmonics']} harmonics: JAX "
               f"{s['jax_seconds'] * 1e3:.1f} ms, PyTorch DDSP-style {s['torch_seconds'] * 1e3:.1f} ms "
               f"({s['speedup_vs_torch']:.1f}x, JAX on {s['jax_backend']}); notes {s['max_difference_of_peak']:.1e} "
               f"of the peak apart, gradients {s['max_gradient_difference_of_largest']:.1e} of the largest")
  for r in results['metric_loss']:
    shares = ', '.join(f'{v:.2%} of aux:{k}' for k, v in r.get('share_of_aux_step', {}).items())
    lines.append(f"metric loss + grad, batch {r['batch_size']}: {r['seconds'] * 1e3:.2f} ms" +
                 (f' ({shares})' if shares else ''))
  p = results['input_pipeline']
  lines.append(f"input pipeline: {p['examples_per_second']:.0f} examples/s vs the aux:{results['default_size']} "
               f"step's {p['step_examples_per_second']:.0f} ({p['pipeline_to_step_ratio']:.0f}x); "
               f"loading the host's share {p['load_seconds']:.1f} s" if 'pipeline_to_step_ratio' in
               p else f"input pipeline: {p['examples_per_second']:.0f} examples/s")
  if 'default_run' in results:
    r = results['default_run']
    lines.append(f"default run ({r['steps']} steps): peak RSS {r['peak_rss_gib']:.2f} GiB, {r['wall_seconds']:.0f} s")
  if 'evaluation' in results:
    r = results['evaluation']
    lines.append(f"evaluation, N={r['num_translations']}: {r['seconds']:.1f} s (listening measures of "
                 f"{r['listening']['clips']} clips: {r['phase_seconds']['listening']:.1f} s; in tune "
                 f"{r['listening']['in_tune_50c']:.0%}, flatness {r['listening']['flatness_median']:.1e})")
  return '\n'.join(lines)


def run() -> dict[str, Any]:
  results: dict[str, Any] = {
      'machine': f'{os.cpu_count()} CPU cores, {jax.device_count()} {jax.default_backend()} device(s), '
                 f'jax {jax.__version__}',
      'default_size': FLAGS.default_size,
      'dtype': FLAGS.dtype
  }
  logging.info('Ceiling.')
  results['ceiling'] = matmul_ceiling(FLAGS.matmul_size, FLAGS.repeats, FLAGS.dtype)
  ceiling = results['ceiling']['flops_per_second']

  results['train_step'], results['step_profile'] = {}, {}
  for size in FLAGS.sizes:
    results['train_step'][size] = {}
    for name in FLAGS.configs:
      logging.info('Train step %s:%s.', name, size)
      results['train_step'][size][name] = train_step_benchmark(get_config(name, size), FLAGS.timed_steps, ceiling)
    if 'aux' in FLAGS.configs and (FLAGS.profile_only or not FLAGS.train_step_only):
      logging.info('Profile of the aux:%s step.', size)
      results['step_profile'][size] = step_profile(get_config('aux', size), FLAGS.repeats, ceiling,
                                                   results['train_step'][size]['aux']['step_seconds'])
  if FLAGS.train_step_only or FLAGS.profile_only:
    return results

  default_config = get_config('aux', FLAGS.default_size)
  logging.info('MFCC.')
  results['mfcc'] = mfcc_benchmark(default_config, notes_for(default_config, FLAGS.mfcc_batch), FLAGS.repeats)
  logging.info('Synthesiser.')
  results['synthesizer'] = synthesizer_benchmark(default_config, FLAGS.repeats)
  logging.info('Metric loss.')
  results['metric_loss'] = []
  for b in FLAGS.metric_batches:
    r = metric_loss_benchmark(default_config, int(b), FLAGS.repeats)
    r['share_of_aux_step'] = {
        size: r['seconds'] / steps['aux']['step_seconds']
        for size, steps in results['train_step'].items()
        if 'aux' in steps and steps['aux']['batch_size'] == int(b)
    }
    results['metric_loss'].append(r)
  logging.info('Input pipeline.')
  results['input_pipeline'] = pipeline = input_pipeline_benchmark(default_config, FLAGS.pipeline_batches)
  step = results['train_step'].get(FLAGS.default_size, {}).get('aux')
  if step:
    pipeline['step_examples_per_second'] = step['examples_per_second']
    pipeline['pipeline_to_step_ratio'] = pipeline['examples_per_second'] / step['examples_per_second']

  eval_workdir = FLAGS.eval_workdir and os.path.expanduser(FLAGS.eval_workdir)
  if FLAGS.rss_steps:
    workdir = os.path.join(os.path.dirname(output_path()), 'default_run')
    logging.info('Default run (%d steps) in %s.', FLAGS.rss_steps, workdir)
    if os.path.exists(workdir):
      shutil.rmtree(workdir)
    results['default_run'] = default_run('aux', FLAGS.default_size, workdir, FLAGS.rss_steps)
    eval_workdir = eval_workdir or workdir
  if FLAGS.eval_translations and eval_workdir:
    logging.info('Evaluation of %s.', eval_workdir)
    eval_config = config_lib.load_config(eval_workdir)
    if FLAGS.data_dir:
      eval_config.data_dir = FLAGS.data_dir
    if FLAGS.exported:
      eval_config.data.exported = _exported_path()
    results['evaluation'] = evaluation_benchmark(eval_config, eval_workdir, FLAGS.eval_translations)
  return results


def output_path() -> str:
  if FLAGS.out:
    return os.path.abspath(os.path.expanduser(FLAGS.out))
  config = get_config('aux', FLAGS.default_size)
  return os.path.join(os.path.dirname(os.path.abspath(config.data_dir)), 'benchmarks', 'results.json')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  if FLAGS.exported and not (FLAGS.train_step_only or FLAGS.profile_only):
    try:  # Before minutes of train-step sections, not after them.
      exported_lib.ExportedInputs(get_config('aux', FLAGS.default_size))
    except exported_lib.ExportError as e:
      sys.exit(f'Error: {e}')
  path = output_path()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  results = run()
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print(table(results))
  print(f'\nWrote {path}')


if __name__ == '__main__':
  app.run(main)
