r"""Trains the GAN on an accelerator from a self-contained data bundle and measures what it learned.

A lent GPU machine has JAX, Flax and Optax but no TensorFlow, TFDS or dlib, and cannot download anything, so the
run there reads everything from one .npz bundle made here from a trained workdir:

  # here (the full install): the notes, face embeddings, audio metric phi, classifiers and statistics of a workdir
  python scripts/gpu_train.py bundle --workdir=~/.cache/face2music_jax/work/aux_small --out=.devdata/bundle.npz
  # there: train each generator at a size for a wall-clock budget, then measure it; results under --out
  python scripts/gpu_train.py run --bundle=.devdata/bundle.npz --out=$OUT --deadline=540 \
      --runs='wavegan:paper:240,wavegan:paper:120:model.wavegan.upsample=nearest;train.g_lr=2e-4,harmonic:paper:60'

Each run is `generator:size:seconds[:field=value;...]` (config overrides, values as Python literals). `run` trains
the `aux` config (adversarial + metric preservation + auxiliary D) with the project's own jitted
train step, at the size named (G and D widths, batch), keeping the bundle's phi, classifiers and statistics (those
of the workdir it came from), for the given seconds of training after compilation. Then it measures the model as
`run_eval.py` does: the listening measures of held-out faces at the listening pitches (with the real test notes
as reference), FID / IS with the bundle's pitch and family classifiers against real training notes, and the
Pearson correlation of face and phi distances at each listening pitch. It writes results.json (device, versions,
steps, steps/s, compile seconds, measures) and per run one WAV (4 held-out faces, each at every listening pitch,
with short gaps) and a spectrogram PNG of it.
"""

import argparse
import ast
import functools
import json
import os
import platform
import sys
import time

import jax
import ml_collections
import numpy as np
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from face2music_jax.configs import default  # pylint: disable=g-import-not-at-top
from face2music_jax import config_lib
from face2music_jax import gan
from face2music_jax import loops
from face2music_jax import metrics
from face2music_jax import parallel
from face2music_jax import train_step
from face2music_jax.audio import listening
from face2music_jax.audio import wav as wav_lib
from face2music_jax.data import sampling
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models.classifiers import AudioClassifier

# Fields of the bundle's config that the run keeps whatever the size: the data, phi and classifiers they define.
_KEPT_FIELDS = ('audio', 'mfcc', 'eval.listening_pitches', 'eval.listening_faces', 'model.audio_embedding_dim',
                'model.audio_embedding_channels', 'model.classifier_channels', 'data.embedding_dim')
_NUM_FID = 400
_BATCH = 64  # Translations, phi and classifiers run over batches of this size.


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
  return {f'{prefix}/{"/".join(k)}': np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def _unflat(bundle: dict[str, np.ndarray], prefix: str):
  items = {tuple(k[len(prefix) + 1:].split('/')): v for k, v in bundle.items() if k.startswith(prefix + '/')}
  return traverse_util.unflatten_dict(items)


def make_bundle(workdir: str, out: str) -> None:
  """Writes the .npz bundle of a trained workdir (its config.json, stage artefacts and data). Needs TF/TFDS."""
  from face2music_jax import evaluate  # pylint: disable=g-import-not-at-top
  from face2music_jax import stages  # pylint: disable=g-import-not-at-top
  from face2music_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(workdir)
  stages.ensure_data(config)
  inputs = inputs_lib.Inputs(config)
  metric = stages.ensure_audio_embedding(config, workdir, inputs)
  classifiers = stages.ensure_classifiers(config, workdir, inputs)
  stats = stages.ensure_statistics(config, workdir, metric, inputs)
  notes = {s: inputs.notes(s) for s in ('train', 'valid', 'test')}
  pitches = np.asarray(config_lib.listening_pitches(config))
  ref_midi = config_lib.midi_pitch(config, np.concatenate([notes[s]['pitch'] for s in notes]))
  keep = np.isin(ref_midi, pitches)
  faces = evaluate.load_faces(inputs, images=False)
  bundle = {
      'config_json': np.asarray(config.to_json()),
      'train_audio': notes['train']['audio'].astype(np.float16),
      'train_pitch': notes['train']['pitch'],
      'train_family': notes['train']['family'],
      'test_audio': notes['test']['audio'].astype(np.float16),
      'test_pitch': notes['test']['pitch'],
      'ref_audio': np.concatenate([notes[s]['audio'] for s in notes])[keep].astype(np.float16),
      'ref_midi': ref_midi[keep],
      'train_faces': faces['embedding'][faces['split'] == 'train'],
      'test_faces': faces['embedding'][faces['split'] == 'test'],
      'test_face_names': faces['name'][faces['split'] == 'test'],
      **{
          f'stats/{k}': np.float32(v) for k, v in stats.items()
      },
      **_flat('metric', {'params': metric['params']}),
      'metric_mfcc_mean': metric['mfcc_mean'],
      'metric_mfcc_std': metric['mfcc_std'],
      **_flat('pitch_classifier', classifiers['pitch']),
      **_flat('family_classifier', classifiers['family']),
  }
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez(out, **bundle)
  print(f'Wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB).')


def _config(bundle_config: ml_collections.ConfigDict, generator: str, size: str,
            overrides: dict[str, object]) -> ml_collections.ConfigDict:
  config = default.get_config(size, name='aux')
  for field in _KEPT_FIELDS:
    config_lib.set_field(config, field, config_lib.get_field(bundle_config, field))
  config.model.generator = generator
  config.train.log_every = 100
  for field, value in overrides.items():
    config_lib.set_field(config, field, value)
  return config_lib.validate(config)


def _parse_run(spec: str) -> tuple[str, str, float, dict[str, object]]:
  """'generator:size:seconds[:field=value;...]' -> its parts (values parsed as Python literals)."""
  generator, size, seconds, *rest = spec.split(':', 3)
  overrides = {}
  for item in filter(None, (rest[0] if rest else '').split(';')):
    field, value = item.split('=', 1)
    try:
      overrides[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[field] = value
  return generator, size, float(seconds), overrides


def _train(config, bundle, seconds: float, deadline: float, log) -> tuple[gan.TrainState, gan.Models, dict]:
  """Trains for `seconds` after compilation, or until the wall clock `deadline` (time.time()); returns the state
  and the timing figures."""
  mesh = parallel.make_mesh()
  models = gan.Models(config)
  root = jax.random.key(config.seed)
  state = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(root)
  step_fn = train_step.compile_train_step(models, mesh)
  metric = parallel.replicate(
      mesh, {
          'params': _unflat(bundle, 'metric')['params'],
          'mfcc_mean': bundle['metric_mfcc_mean'],
          'mfcc_std': bundle['metric_mfcc_std']
      })
  stats = parallel.replicate(mesh, {k: bundle[f'stats/{k}'] for k in ('mu_x', 'sigma_x', 'mu_y', 'sigma_y')})
  audio, pitch, faces = bundle['train_audio'].astype(np.float32), bundle['train_pitch'].astype(np.int32), \
      bundle['train_faces']
  b, d = config.train.batch_size, config.train.d_steps
  face_sampler = sampling.EpochSampler(len(faces), b, config.seed)
  note_sampler = sampling.EpochSampler(len(audio), b, config.seed + 1)

  def batch(step):
    subs = [step * d + k for k in range(d)]
    f = np.stack([face_sampler.indices(s) for s in subs])
    n = np.stack([note_sampler.indices(s) for s in subs])
    return parallel.global_batch(mesh, {'embedding': faces[f], 'audio': audio[n], 'pitch': pitch[n]})

  start = time.perf_counter()
  state, m = step_fn(state, batch(0), metric, stats, root)
  jax.block_until_ready(m)
  compile_seconds = time.perf_counter() - start
  step, history = 1, []
  start = time.perf_counter()
  next_batch = batch(1)
  while time.perf_counter() - start < seconds and time.time() < deadline:
    state, m = step_fn(state, next_batch, metric, stats, root)
    step += 1
    next_batch = batch(step)
    if step % config.train.log_every == 0:
      values = {k: float(v) for k, v in gan.to_host(m).items()}
      history.append({'step': step, **values})
      log(f'  step {step}  d_loss {values["d_loss"]:.3f}  g_loss {values["g_loss"]:.3f}  '
          f'{(step - 1) / (time.perf_counter() - start):.2f} steps/s')
      if not values['finite']:
        break
  jax.block_until_ready(state)
  elapsed = time.perf_counter() - start
  return state, models, {
      'steps': step,
      'compile_seconds': compile_seconds,
      'train_seconds': elapsed,
      'steps_per_second': (step - 1) / elapsed,
      'examples_per_second': (step - 1) * b / elapsed,
      'history': history
  }


def _measure(config, bundle, models, state) -> tuple[dict, np.ndarray, np.ndarray]:
  """Listening measures, FID / IS and Pearson of a trained state (as evaluate.py computes them)."""
  sr = config.audio.sample_rate
  g_vars = jax.tree.map(np.asarray, gan.to_host(state.g))
  generate = functools.partial(gan.make_generate(models.g), g_vars)
  pitches = np.asarray(config_lib.listening_pitches(config))
  names = bundle['test_face_names']
  index = sampling.round_robin_by_identity(names, config.eval.listening_faces)
  face_index, midi = np.tile(index, len(pitches)), np.repeat(pitches, len(index))
  z = bundle['test_faces'][face_index]
  fake = loops.batched(generate, z, config_lib.pitch_class(config, midi).astype(np.int32), batch_size=_BATCH)
  ref_audio, ref_midi = bundle['ref_audio'].astype(np.float32), bundle['ref_midi']
  result = {'translations': listening.measure(fake, midi, sr)}
  result['translations']['distinctness'] = listening.distinctness(fake, midi, names[face_index], ref_audio, ref_midi,
                                                                  sr)
  # Pearson of face vs phi distances at each listening pitch (one pitch per face), averaged.
  metric = {
      'params': _unflat(bundle, 'metric')['params'],
      'mfcc_mean': bundle['metric_mfcc_mean'],
      'mfcc_std': bundle['metric_mfcc_std']
  }
  phi = jax.jit(lambda a: embedding_lib.phi(metric, a, config))
  fake_phi = loops.batched(phi, fake, batch_size=_BATCH)
  per_pitch = [metrics.distance_correlation(z[midi == p], fake_phi[midi == p])[0] for p in pitches]
  result['pearson_per_pitch'] = dict(zip(pitches.tolist(), map(float, per_pitch)))
  result['pearson_mean'] = float(np.nanmean(per_pitch))
  # FID / IS against real training notes, translations of training faces at the real notes' pitches.
  rng = np.random.default_rng(1)
  real_index = rng.permutation(len(bundle['train_audio']))[:_NUM_FID]
  real = bundle['train_audio'][real_index].astype(np.float32)
  real_pitch = bundle['train_pitch'][real_index].astype(np.int32)
  faces = bundle['train_faces'][np.arange(len(real_index)) % len(bundle['train_faces'])]
  gen = loops.batched(generate, faces, real_pitch, batch_size=_BATCH)
  for kind, classes in (('pitch', config_lib.num_pitches(config)), ('family', int(bundle['train_family'].max()) + 1)):
    model = AudioClassifier(classes, config.model.classifier_channels)
    params = _unflat(bundle, f'{kind}_classifier')
    apply = jax.jit(lambda a, model=model, params=params: (lambda o: (jax.nn.softmax(o[0]), o[1]))
                    (model.apply({'params': params}, a)))
    real_probs, real_feats = loops.batched(apply, real, batch_size=_BATCH)
    fake_probs, fake_feats = loops.batched(apply, gen, batch_size=_BATCH)
    result[f'fid_{kind}'] = metrics.frechet_distance(real_feats, fake_feats)
    result[f'inception_score_{kind}'] = metrics.inception_score(fake_probs)
    result[f'inception_score_{kind}_real'] = metrics.inception_score(real_probs)
  return result, fake, face_index


def _write_listening(path_wav: str, path_png: str, fake: np.ndarray, face_index: np.ndarray, sr: int,
                     title: str) -> None:
  """4 faces, each at every listening pitch, with 0.1 s gaps; and its spectrogram."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  faces = list(dict.fromkeys(face_index.tolist()))[:4]
  gap = np.zeros(sr // 10, np.float32)
  clips = [c for f in faces for i in np.flatnonzero(face_index == f) for c in (fake[i], gap)]
  audio = np.concatenate(clips)
  wav_lib.write_wav(path_wav, audio, sr)
  fig, ax = plt.subplots(figsize=(12, 4))
  ax.specgram(audio, NFFT=1024, Fs=sr, noverlap=768, cmap='magma')
  ax.set(title=title, xlabel='s', ylabel='Hz')
  fig.tight_layout()
  fig.savefig(path_png, dpi=80)
  plt.close(fig)


# Seconds kept free after each run's training for its measures and files.
_MEASURE_RESERVE = 50


def run(bundle_path: str, out: str, runs: str, deadline_seconds: float = 0) -> dict:
  """Trains and measures each run of `runs` (comma-separated specs, module docstring); writes out/results.json
  after each. With `deadline_seconds`, training stops early, and later runs are skipped, so that everything ends
  within that many seconds of the start."""
  end = time.time() + deadline_seconds if deadline_seconds else float('inf')
  os.makedirs(out, exist_ok=True)
  bundle = dict(np.load(bundle_path))
  bundle_config = ml_collections.ConfigDict(json.loads(str(bundle['config_json'])))
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  results = {
      'device': str(jax.devices()[0].device_kind),
      'platform': jax.devices()[0].platform,
      'device_count': jax.device_count(),
      'python': platform.python_version(),
      'versions': {
          'jax': jax.__version__,
          'flax': flax.__version__,
          'optax': optax.__version__,
          'numpy': np.__version__
      },
      'bundle_config': f'{bundle_config.name}_{bundle_config.size}',
      'runs': []
  }
  log = lambda s: print(s, flush=True)
  # The references, through the same measures.
  test_midi = config_lib.midi_pitch(bundle_config, bundle['test_pitch'])
  results['real_test_notes'] = listening.measure(bundle['test_audio'].astype(np.float32), test_midi,
                                                 bundle_config.audio.sample_rate)
  for i, spec in enumerate(runs.split(',')):
    generator, size, seconds, overrides = _parse_run(spec)
    if time.time() > end - 2 * _MEASURE_RESERVE:
      log(f'Skipping {spec}: too little time left before the deadline.')
      results['runs'].append({'spec': spec, 'skipped': 'deadline'})
      continue
    config = _config(bundle_config, generator, size, overrides)
    log(f'{spec}: training for {seconds} s on {results["device"]} (batch {config.train.batch_size})')
    state, models, timing = _train(config, bundle, seconds, end - _MEASURE_RESERVE, log)
    log(f'  {timing["steps"]} steps, {timing["steps_per_second"]:.2f} steps/s, compile {timing["compile_seconds"]:.1f} s'
       )
    start = time.perf_counter()
    measures, fake, face_index = _measure(config, bundle, models, state)
    t = measures['translations']
    log(f'  in tune {t["in_tune_50c"]:.2f}, flatness {t["flatness"]["median"]:.2g}, distinctness '
        f'{t["distinctness"]["mean"]:.2f}, FID-pitch {measures["fid_pitch"]:.1f}, IS-pitch '
        f'{measures["inception_score_pitch"]:.2f}, Pearson {measures["pearson_mean"]:.3f}')
    name = f'run{i}_{generator}_{size}'
    _write_listening(os.path.join(out, f'{name}.wav'), os.path.join(out, f'{name}.png'), fake, face_index,
                     config.audio.sample_rate, f'{name}, aux, step {timing["steps"]}')
    params = sum(x.size for x in jax.tree.leaves(state.g['params']))
    results['runs'].append({
        'spec': spec,
        'generator': generator,
        'size': size,
        'config': 'aux',
        'overrides': overrides,
        'budget_seconds': seconds,
        'batch_size': config.train.batch_size,
        'generator_params': int(params),
        **timing, 'measure_seconds': time.perf_counter() - start,
        'measures': measures
    })
    _write_results(out, results)
  _write_results(out, results)
  return results


def _write_results(out: str, results: dict) -> None:
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, default=float)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  b = sub.add_parser('bundle', help='write the data bundle of a trained workdir (here, with TF)')
  b.add_argument('--workdir', required=True)
  b.add_argument('--out', required=True)
  r = sub.add_parser('run', help='train and measure from a bundle (on the device)')
  r.add_argument('--bundle', required=True)
  r.add_argument('--out', required=True)
  r.add_argument('--runs', default='wavegan:paper:240,harmonic:paper:120',
                 help='comma-separated generator:size:seconds[:field=value;...]')
  r.add_argument('--deadline', type=float, default=0, help='end everything within this many seconds (0 = none)')
  args = parser.parse_args()
  if args.command == 'bundle':
    make_bundle(os.path.expanduser(args.workdir), args.out)
  else:
    run(args.bundle, args.out, args.runs, args.deadline)


if __name__ == '__main__':
  main()
