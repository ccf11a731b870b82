"""Prerequisite stages of GAN training and evaluation, each reading and writing named artefacts in the workdir.

  data            -> the SoundFont notes (TFDS) and the default faces (TFRecords), under config.data_dir
  audio_embedding -> <workdir>/audio_embedding/       (triplet-trained e(y) + MFCC standardisation: phi(y))
  classifiers     -> <workdir>/classifiers/{pitch,family}/ and classifiers/metrics.json (test accuracies)
  statistics      -> <workdir>/statistics.json        (mu_x, sigma_x, mu_y, sigma_y of pairwise distances)

`ensure_*` returns the artefact, running the stage first when the artefact is missing. Every process computes
the same artefact (same data, same seed); Orbax writes it once.
"""

import errno
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import losses
from face2music_jax.audio import embedding as embedding_lib
from face2music_jax.data import audio as audio_data
from face2music_jax.data import faces as face_data
from face2music_jax.data import notes as notes_data
from face2music_jax.data.sampling import EpochSampler
from face2music_jax.models.classifiers import AudioClassifier


def check_writable(directory: str, what: str) -> None:
  """Fails at once, with a PermissionError naming `directory`, if files cannot be created there.

  A directory that does not exist yet is checked through its nearest existing ancestor; nothing is created, so a
  command that fails later has written nothing.

  Args:
    directory: the directory that a command will write to.
    what: what it is, for the message (e.g. 'work directory').
  """
  existing = os.path.abspath(directory)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    if not os.path.isdir(existing):
      raise NotADirectoryError(errno.ENOTDIR, 'Not a directory', existing)
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise PermissionError(f'The {what} {directory} is not writable: {e}') from e


def ensure_data(config: ml_collections.ConfigDict) -> None:
  """Stage 1: builds the embedded default datasets when missing (real datasets must already be prepared)."""
  if config.data.audio_source == 'soundfont_notes':
    notes_data.prepare_notes(config)
  if config.data.face_source == 'lfw_subset':
    face_data.prepare_default_faces(config)


@functools.cache
def _notes(config_json: str, split: str) -> dict[str, np.ndarray]:
  config = ml_collections.ConfigDict(json.loads(config_json))
  return audio_data.load_notes(config, split)


def load_notes(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """All notes of a split, cropped and filtered as the models see them (cached per process)."""
  return _notes(config.to_json(), split)


def load_face_embeddings(config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """Precomputed face embeddings f(x) of a split: [N, embedding_dim] float32."""
  faces = face_data.load_faces(face_data.face_files(config, split), config.data.face_image_size,
                               embedding_dim=config.data.embedding_dim)
  return faces['embedding']


def batched(fn: Callable[..., Any], *arrays: np.ndarray, batch_size: int) -> Any:
  """Applies a jitted `fn` to row batches of `arrays` and concatenates its outputs (a pytree) on the host.

  The last batch is padded with copies of its last row, so `fn` compiles for one batch shape only.
  """
  n = len(arrays[0])
  outputs = []
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    size = len(chunk[0])
    chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - size, axis=0)]) for c in chunk]
    outputs.append(jax.tree.map(lambda o, size=size: np.asarray(o)[:size], fn(*chunk)))
  return jax.tree.map(lambda *o: np.concatenate(o), *outputs)


def fit(loss_fn: Callable[[Any, dict[str, jax.Array]], jax.Array], params: Any, arrays: dict[str, np.ndarray], *,
        steps: int, batch_size: int, lr: float, seed: int, name: str) -> Any:
  """Trains `params` with Adam on batches sampled from in-memory `arrays`; logs progress ~10 times.

  Args:
    loss_fn: (params, batch) -> scalar loss.
    params: initial parameters.
    arrays: equally long numpy arrays; batches are rows of them.
  """
  tx = optax.adam(lr)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  n = len(next(iter(arrays.values())))
  sampler = EpochSampler(n, min(batch_size, n), seed)
  opt_state = tx.init(params)
  start, log_every = time.time(), max(1, steps // 10)
  for s in range(steps):
    idx = sampler.indices(s)
    params, opt_state, loss = step(params, opt_state, {k: v[idx] for k, v in arrays.items()})
    if (s + 1) % log_every == 0 or s + 1 == steps:
      logging.info('[%s] step %d/%d  loss %.4f  %.1f steps/s', name, s + 1, steps, float(loss),
                   (s + 1) / (time.time() - start))
  return params


def _train_audio_embedding(config: ml_collections.ConfigDict) -> embedding_lib.AudioMetric:
  notes = load_notes(config, 'train')
  model = embedding_lib.make_audio_embedding(config)
  length = config.audio.length
  params = model.init(jax.random.key(config.seed), jnp.zeros((1, length)))['params']
  ac = config.audio_embedding

  def loss_fn(p, batch):
    return losses.triplet_loss(model.apply({'params': p}, batch['audio']), batch['family'], ac.margin, ac.mining)

  params = fit(loss_fn, params, {'audio': notes['audio'], 'family': notes['family']}, steps=ac.num_steps,
               batch_size=ac.batch_size, lr=ac.lr, seed=config.seed, name='audio_embedding')
  spread = float(np.mean(np.std(np.asarray(jax.jit(model.apply)({'params': params}, notes['audio'][:256])), axis=0)))
  if spread < 1e-3:
    logging.warning('The audio embedding collapsed (per-dimension std %.2g over 256 notes): phi(y) is then the MFCCs '
                    "alone. Try config.audio_embedding.mining='semi_hard' or a lower lr.", spread)
  mfccs = batched(jax.jit(lambda a: embedding_lib.mfcc_summary(a, config)), notes['audio'], batch_size=256)
  return {'params': jax.tree.map(np.asarray, params), 'mfcc_mean': mfccs.mean(0).astype(np.float32),
          'mfcc_std': (mfccs.std(0) + 1e-6).astype(np.float32)}


def ensure_audio_embedding(config: ml_collections.ConfigDict, workdir: str) -> embedding_lib.AudioMetric:
  """Stage 2a: the audio metric phi(y), trained when missing."""
  path = os.path.join(workdir, 'audio_embedding')
  if not os.path.isdir(path):
    logging.info('Stage audio_embedding: training the triplet audio embedding (%d steps).',
                 config.audio_embedding.num_steps)
    checkpoint.save_artefact(path, _train_audio_embedding(config))
  model = embedding_lib.make_audio_embedding(config)
  like = {'params': model.init(jax.random.key(0), jnp.zeros((1, config.audio.length)))['params'],
          'mfcc_mean': np.zeros(config.mfcc.n_mfcc), 'mfcc_std': np.zeros(config.mfcc.n_mfcc)}
  return checkpoint.restore_artefact(path, like)


def classifier_model(config: ml_collections.ConfigDict, kind: str) -> AudioClassifier:
  """The pitch or family classifier of the config."""
  num_classes = {'pitch': config_lib.num_pitches(config), 'family': audio_data.num_families(config)}[kind]
  return AudioClassifier(num_classes, config.model.classifier_channels)


def _accuracy(model: AudioClassifier, params: Any, audio: np.ndarray, labels: np.ndarray) -> float:
  predict = jax.jit(lambda a: jnp.argmax(model.apply({'params': params}, a)[0], axis=-1))
  preds = batched(predict, audio, batch_size=256)
  return float(np.mean(preds == labels))


def ensure_classifiers(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Stage 2b: the pitch and family classifiers (for FID / Inception Score), trained when missing.

  Returns:
    {'pitch': params, 'family': params, 'metrics': {'pitch_test_accuracy': ..., 'family_test_accuracy': ...}}.
  """
  root = os.path.join(workdir, 'classifiers')
  metrics_path = os.path.join(root, 'metrics.json')
  out: dict[str, Any] = {}
  for kind in ('pitch', 'family'):
    model = classifier_model(config, kind)
    like = model.init(jax.random.key(0), jnp.zeros((1, config.audio.length)))['params']
    path = os.path.join(root, kind)
    if not os.path.isdir(path):
      notes = load_notes(config, 'train')
      logging.info('Stage classifiers: training the %s classifier (%d steps).', kind, config.classifiers.num_steps)

      def loss_fn(p, batch, model=model, kind=kind):
        logits = model.apply({'params': p}, batch['audio'])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[kind]).mean()

      params = fit(loss_fn, like, {'audio': notes['audio'], kind: notes[kind]}, steps=config.classifiers.num_steps,
                   batch_size=config.classifiers.batch_size, lr=config.classifiers.lr, seed=config.seed,
                   name=f'{kind}_classifier')
      checkpoint.save_artefact(path, params)
      if os.path.exists(metrics_path):
        os.remove(metrics_path)
    out[kind] = checkpoint.restore_artefact(path, like)
  if not os.path.exists(metrics_path):
    test = load_notes(config, 'test')
    metrics = {f'{k}_test_accuracy': _accuracy(classifier_model(config, k), out[k], test['audio'], test[k])
               for k in ('pitch', 'family')}
    metrics['num_test_notes'] = int(len(test['audio']))
    _write_json(metrics_path, metrics)
    logging.info('Classifier test accuracies: %s', metrics)
  with open(metrics_path) as f:
    out['metrics'] = json.load(f)
  return out


def pairwise_distance_stats(x: np.ndarray, num_pairs: int, seed: int) -> tuple[float, float]:
  """Mean and std of ||x_i - x_j|| over `num_pairs` seeded random pairs i != j of the rows of x [N, D]."""
  if len(x) < 2:
    raise ValueError('Pairwise distance statistics need at least 2 examples.')
  rng = np.random.default_rng(seed)
  i = rng.integers(0, len(x), num_pairs)
  j = (i + rng.integers(1, len(x), num_pairs)) % len(x)  # j != i, uniform over the others.
  d = np.linalg.norm(x[i].astype(np.float64) - x[j], axis=-1)
  return float(d.mean()), float(d.std())


def ensure_statistics(config: ml_collections.ConfigDict, workdir: str,
                      metric: embedding_lib.AudioMetric) -> dict[str, float]:
  """Stage 3: dataset-wide (mu, sigma) of pairwise distances in face space and in the audio metric space."""
  path = os.path.join(workdir, 'statistics.json')
  if not os.path.exists(path):
    logging.info('Stage statistics: pairwise distance statistics over %d sampled pairs.', config.stats.num_pairs)
    faces = load_face_embeddings(config, 'train')[:config.stats.max_examples]
    audio = load_notes(config, 'train')['audio'][:config.stats.max_examples]
    feats = batched(jax.jit(lambda a: embedding_lib.phi(metric, a, config)), audio, batch_size=256)
    mu_x, sigma_x = pairwise_distance_stats(faces, config.stats.num_pairs, config.seed)
    mu_y, sigma_y = pairwise_distance_stats(feats, config.stats.num_pairs, config.seed + 1)
    stats = {'mu_x': mu_x, 'sigma_x': sigma_x, 'mu_y': mu_y, 'sigma_y': sigma_y,
             'num_faces': int(len(faces)), 'num_notes': int(len(audio)), 'num_pairs': config.stats.num_pairs}
    _write_json(path, stats)
    logging.info('Statistics: %s', stats)
  with open(path) as f:
    stats = json.load(f)
  if min(stats['sigma_x'], stats['sigma_y']) <= 0:
    raise ValueError(f'{path}: a pairwise distance std is 0 (all examples identical?): {stats}')
  return {k: stats[k] for k in losses.STATS_KEYS}


def _write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically on process 0 (a reader never sees a half-written file); all processes wait for it."""
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=2)
    os.replace(tmp, path)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'write {path}')
