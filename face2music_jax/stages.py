"""Prerequisite stages of GAN training and evaluation, each reading and writing named artefacts in the workdir.

  data            -> the SoundFont notes (TFDS) and the default faces (TFRecords), under config.data_dir
  audio_embedding -> <workdir>/audio_embedding/       (triplet-trained e(y) + the MFCC means' centre and scale: phi(y))
  classifiers     -> <workdir>/classifiers/{pitch,family}/ and classifiers/metrics.json (test accuracies)
  statistics      -> <workdir>/statistics.json        (mu_x, sigma_x, mu_y, sigma_y of pairwise distances; with
                                                       train.metric_features 'both' also mu_y_mfcc, sigma_y_mfcc)

`ensure_*` returns the artefact, running the stage first when the artefact is missing. Every process computes
the same artefact (same data, same seed); Orbax writes it once. Artefacts carry checksums (of every array, or of
the JSON); one that does not read back as written is set aside as `<artefact>.corrupt-<reason>` (never deleted)
and its stage runs again.
"""

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from face2music_jax import checkpoint
from face2music_jax import files
from face2music_jax import loops
from face2music_jax import losses
from face2music_jax import preemption
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models.classifiers import AudioClassifier, make_classifier


def ensure_data(config: ml_collections.ConfigDict) -> None:
  """Stage 1: builds the embedded default datasets when missing (real datasets must already be prepared).

  The one door that builds data: the readers (`data/inputs.py` and below) only read, and name what is missing.
  Data read from an exported file (`config.data.exported`) are built already. When both the notes and the faces
  are missing, the notes render in a second process while this one embeds the faces: each job keeps one core busy
  (both hold Python's lock most of the time, so threads would take turns), and the data phase of a first run takes
  as long as the longer of the two instead of their sum. An error in the notes then shows when the faces are done.
  """
  if config.data.exported:
    return
  # pylint: disable=import-outside-toplevel  (the builders need TensorFlow, TFDS and dlib)
  from face2music_jax.data import default_faces
  from face2music_jax.data import notes as notes_data
  notes = config.data.audio_source == 'soundfont_notes' and not notes_data.notes_builder(config).is_prepared()
  faces = config.data.face_source == 'lfw_subset'
  if notes and faces and not default_faces.is_built(config):
    with _notes_in_second_process(config):
      default_faces.prepare_default_faces(config)
    return
  if notes:
    notes_data.prepare_notes(config)
  if faces:
    default_faces.prepare_default_faces(config)  # Built ones: their index is read and checked.


@contextlib.contextmanager
def _notes_in_second_process(config: ml_collections.ConfigDict) -> Iterator[None]:
  """Renders the notes of `config` in a second Python process while the block runs, and waits for it at its end.

  A fresh interpreter (`python -P -c`, `notes.second_process_main`), not multiprocessing's spawn, which would
  import the caller's main module again (a script that trains at its top level would train in the second process
  too). It gets the config and this process's log verbosity and filters, pickled on stdin; an error there is
  logged there with its traceback and comes back pickled, to be raised here. Leaving the block early (an error,
  SIGTERM, Ctrl-C) stops the second process with SIGTERM, which unwinds it through TFDS's clean-up of its
  incomplete directory (SIGKILL after 30 s); so does this process's death (Linux's parent-death signal).
  """
  logging.info('Rendering the notes in a second process while this one embeds the faces.')
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # Before any import: tied to this process (SIGTERM when it dies; gone already: stop), and fd 1 kept for the
  # answer alone, anything printed going to stderr.
  code = (f'import ctypes, os, signal, sys\n'
          f'try:\n  ctypes.CDLL(None).prctl(1, signal.SIGTERM)\nexcept Exception:\n  pass\n'
          f'if os.getppid() != {os.getpid()}:\n  sys.exit({preemption.EXIT_CODE})\n'
          f'answer = os.dup(1)\nos.dup2(2, 1)\n'
          f'if {package_root!r} not in sys.path:\n  sys.path.insert(0, {package_root!r})\n'
          'from face2music_jax.data import notes\nnotes.second_process_main(answer)')
  # Its own process group: a terminal's Ctrl-C reaches this process only, which then stops it once.
  proc = subprocess.Popen([sys.executable, '-P', '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          process_group=0)
  try:
    try:
      proc.stdin.write(
          pickle.dumps({
              'config': config,
              'verbosity': logging.get_verbosity(),
              'filters': _picklable_log_filters()
          }))
      proc.stdin.close()
    except BrokenPipeError:  # It ended before reading (e.g. an import failed): its exit code says so.
      proc.wait()
      raise _second_process_error(b'', proc.returncode) from None
    yield
    out = proc.stdout.read()
    if proc.wait() != 0:
      raise _second_process_error(out, proc.returncode)
    logging.info('The notes are rendered.')
  finally:
    if proc.poll() is None:
      proc.terminate()
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout):
      with contextlib.suppress(OSError):  # A pipe whose reader is gone.
        stream.close()


def _picklable_log_filters() -> list[bytes]:
  """This process's absl log filters (e.g. the commands' quiet TFDS lines), each pickled; those that do not pickle
  are left out."""
  out = []
  for log_filter in logging.get_absl_handler().filters:
    try:
      out.append(pickle.dumps(log_filter))
    except Exception:  # pylint: disable=broad-except  (a lambda, a lock, ...)
      logging.debug('Log filter %r not given to the process rendering the notes.', log_filter)
  return out


def _second_process_error(out: bytes, code: int) -> Exception:
  """The error of the process rendering the notes: the one it sent back, or one saying how it ended."""
  try:
    error = pickle.loads(out) if out else None
  except Exception:  # pylint: disable=broad-except  (it could not say why)
    error = None
  if isinstance(error, Exception):
    error.add_note('(Raised in the process rendering the notes; its traceback is in the log above.)')
    return error
  how = f'was stopped by signal {-code} ({signal.strsignal(-code)})' if code < 0 else f'ended with exit code {code}'
  return RuntimeError(f'The process rendering the notes {how}; its messages are in the log above.')


def _train_audio_embedding(config: ml_collections.ConfigDict, inputs: inputs_lib.Inputs) -> embedding_lib.AudioMetric:
  notes = inputs.notes('train')
  model = embedding_lib.make_audio_embedding(config)
  length = config.audio.length
  # Jitted: the eager init compiles each operation of the forward pass on its own (11 s against 3.4 s for the small
  # embedding here); the values are the same, bit for bit (checked for the small and tiny configs).
  params = jax.jit(model.init)(jax.random.key(config.seed), jnp.zeros((1, length)))['params']
  ac = config.audio_embedding

  def loss_fn(p, batch):
    return losses.triplet_loss(model.apply({'params': p}, batch['audio']), batch['family'], ac.margin, ac.mining)

  params = loops.fit(loss_fn, params, {
      'audio': notes['audio'],
      'family': notes['family']
  }, steps=ac.num_steps, batch_size=ac.batch_size, lr=ac.lr, seed=config.seed, name='audio_embedding')
  spread = float(np.mean(np.std(np.asarray(jax.jit(model.apply)({'params': params}, notes['audio'][:256])), axis=0)))
  if spread < 1e-3:
    logging.warning(
        'The audio embedding collapsed (per-dimension std %.2g over 256 notes): phi(y) is then the MFCCs '
        "alone. Try config.audio_embedding.mining='semi_hard' or a lower lr.", spread)
  mfccs = loops.batched(jax.jit(lambda a: embedding_lib.mfcc_summary(a, config)), notes['audio'], batch_size=256)
  std = mfccs.std(0)
  if ac.mfcc_scale == 'pooled':  # One scale for every coefficient: the half keeps the MFCC means' own distances.
    std = np.full_like(std, np.sqrt(np.mean(np.square(std))))
  return {
      'params': jax.tree.map(np.asarray, params),
      'mfcc_mean': mfccs.mean(0).astype(np.float32),
      'mfcc_std': (std + 1e-6).astype(np.float32)
  }


def _set_aside(path: str, error: Exception, reason: str) -> None:
  """Moves a corrupt artefact out of its stage's way (process 0; the others find it gone or fail on it too)."""
  if jax.process_index() == 0 and os.path.exists(path):
    moved = files.set_aside(path, reason)
    logging.error('%s Set aside as %s; the stage runs again.', error, moved)


def _restored(path: str, like: Any) -> Any | None:
  """The array artefact at `path`; None if it is missing, or corrupt (then set aside, so that its stage reruns)."""
  if not os.path.exists(path):
    return None
  try:
    return checkpoint.restore_artefact(path, like)
  except checkpoint.CorruptCheckpointError as e:
    _set_aside(path, e, e.reason)
    return None


def _read_json(path: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
  """The JSON artefact at `path`; None if it is missing, or corrupt or incomplete (then set aside)."""
  if not os.path.exists(path):
    return None
  try:
    obj = files.read_json(path, checksum=True)
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
      raise files.CorruptFileError(f'{path} lacks {", ".join(missing)}.')
    return obj
  except files.CorruptFileError as e:
    _set_aside(path, e, 'checksum')
    return None


def audio_metric_shapes(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The shapes and dtypes of the audio metric phi's artefact (embedding_lib.AudioMetric), computed, not built."""
  model = embedding_lib.make_audio_embedding(config)
  return {
      'params': jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, config.audio.length)))['params'],
      'mfcc_mean': jax.ShapeDtypeStruct((config.mfcc.n_mfcc,), np.float32),
      'mfcc_std': jax.ShapeDtypeStruct((config.mfcc.n_mfcc,), np.float32),
  }


def ensure_audio_embedding(config: ml_collections.ConfigDict, workdir: str,
                           inputs: inputs_lib.Inputs | None = None) -> embedding_lib.AudioMetric:
  """Stage 2a: the audio metric phi(y), trained when missing or corrupt (on the notes of `inputs`, or of a new
  loader if it is None or serves other data: `data.inputs.for_config`)."""
  path = os.path.join(workdir, 'audio_embedding')
  like = audio_metric_shapes(config)
  metric = _restored(path, like)
  if metric is None:
    logging.info('Stage audio_embedding: training the triplet audio embedding (%d steps).',
                 config.audio_embedding.num_steps)
    checkpoint.save_artefact(path, _train_audio_embedding(config, inputs_lib.for_config(config, inputs)))
    metric = checkpoint.restore_artefact(path, like)
  return metric


def _accuracy(model: AudioClassifier, params: Any, audio: np.ndarray, labels: np.ndarray) -> float:
  predict = jax.jit(lambda a: jnp.argmax(model.apply({'params': params}, a)[0], axis=-1))
  preds = loops.batched(predict, audio, batch_size=256)
  return float(np.mean(preds == labels))


def ensure_classifiers(config: ml_collections.ConfigDict, workdir: str,
                       inputs: inputs_lib.Inputs | None = None) -> dict[str, Any]:
  """Stage 2b: the pitch and family classifiers (for FID / Inception Score), trained when missing or corrupt (on
  the notes of `inputs`, as `ensure_audio_embedding`).

  Returns:
    {'pitch': params, 'family': params, 'metrics': {'pitch_test_accuracy': ..., 'family_test_accuracy': ...}}.
  """
  inputs = inputs_lib.for_config(config, inputs)
  root = os.path.join(workdir, 'classifiers')
  metrics_path = os.path.join(root, 'metrics.json')
  out: dict[str, Any] = {}
  for kind in ('pitch', 'family'):
    model = make_classifier(config, kind)
    audio_like = jnp.zeros((1, config.audio.length))
    shapes = jax.eval_shape(model.init, jax.random.key(0), audio_like)['params']  # Restoring needs no values.
    path = os.path.join(root, kind)
    out[kind] = _restored(path, shapes)
    if out[kind] is None:
      like = jax.jit(model.init)(jax.random.key(0), audio_like)['params']
      notes = inputs.notes('train')
      logging.info('Stage classifiers: training the %s classifier (%d steps).', kind, config.classifiers.num_steps)

      def loss_fn(p, batch, model=model, kind=kind):
        logits = model.apply({'params': p}, batch['audio'])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[kind]).mean()

      params = loops.fit(loss_fn, like, {
          'audio': notes['audio'],
          kind: notes[kind]
      }, steps=config.classifiers.num_steps, batch_size=config.classifiers.batch_size, lr=config.classifiers.lr,
                         seed=config.seed, name=f'{kind}_classifier')
      checkpoint.save_artefact(path, params)
      if os.path.exists(metrics_path):
        os.remove(metrics_path)
      out[kind] = checkpoint.restore_artefact(path, shapes)
  accuracies = tuple(f'{k}_test_accuracy' for k in ('pitch', 'family'))
  out['metrics'] = _read_json(metrics_path, accuracies)
  if out['metrics'] is None:
    test = inputs.notes('test')
    metrics = {
        f'{k}_test_accuracy': _accuracy(make_classifier(config, k), out[k], test['audio'], test[k])
        for k in ('pitch', 'family')
    }
    metrics['num_test_notes'] = int(len(test['audio']))
    files.write_json(metrics_path, metrics, checksum=True)
    logging.info('Classifier test accuracies: %s', metrics)
    out['metrics'] = metrics
  return out


def pairwise_distance_stats(x: np.ndarray, num_pairs: int, seed: int,
                            within: np.ndarray | None = None) -> tuple[float, float]:
  """Mean and std of ||x_i - x_j|| over `num_pairs` seeded random pairs i != j of the rows of x [N, D].

  With `within` [N] group labels (e.g. the notes' pitches), only pairs within a group: i uniform over the rows
  whose group has another row, j uniform over the others of its group.
  """
  rng = np.random.default_rng(seed)
  groups = within
  if groups is None:
    if len(x) < 2:
      raise ValueError('Pairwise distance statistics need at least 2 examples.')
    i = rng.integers(0, len(x), num_pairs)
    j = (i + rng.integers(1, len(x), num_pairs)) % len(x)  # j != i, uniform over the others.
  else:
    order = np.argsort(groups, kind='stable')
    _, start, size = np.unique(groups[order], return_index=True, return_counts=True)
    group_of = np.repeat(np.arange(len(size)), size)  # Of each position in `order`.
    paired = np.flatnonzero(size[group_of] >= 2)
    if not len(paired):
      raise ValueError('Pairwise distance statistics within groups need a group of at least 2 examples.')
    pos = paired[rng.integers(0, len(paired), num_pairs)]
    g = group_of[pos]
    other = start[g] + (pos - start[g] + rng.integers(1, size[g])) % size[g]  # Another of the group, uniform.
    i, j = order[pos], order[other]
  d = np.linalg.norm(x[i].astype(np.float64) - x[j], axis=-1)
  return float(d.mean()), float(d.std())


def ensure_statistics(config: ml_collections.ConfigDict, workdir: str, metric: embedding_lib.AudioMetric,
                      inputs: inputs_lib.Inputs | None = None) -> dict[str, float]:
  """Stage 3: dataset-wide (mu, sigma) of pairwise distances in face space and in the audio metric space (over
  the first config.stats.max_examples faces and notes of `inputs`, as `ensure_audio_embedding`): in phi, or in its
  MFCC half, or both (train.metric_features; losses.metric_losses), over any two notes or two of one pitch
  (train.metric_pairs). A file recorded for other pairs or another space is set aside and computed again."""
  path = os.path.join(workdir, 'statistics.json')
  stats = _read_json(path, losses.STATS_KEYS)
  # The audio pairs Eq. 1 compares (config train.metric_pairs): any two notes, or two notes of one pitch.
  audio_pairs = 'same_pitch' if config.train.metric_pairs == 'one_pitch' else 'any'
  features = config.train.metric_features  # Where Eq. 1 measures the notes (losses.metric_losses).
  recorded = None if stats is None else (stats.get('audio_pairs', 'any'), stats.get('metric_features', 'phi'))
  if recorded is not None and recorded != (audio_pairs, features):  # A run taken over with another config.
    if jax.process_index() == 0:
      moved = files.set_aside(path, 'config', label='stale')
      logging.warning(
          '%s held statistics of %s audio pairs in %s, the config asks for %s in %s (train.metric_pairs = %r, '
          'train.metric_features = %r): set aside as %s; the stage runs again.', path, *recorded, audio_pairs, features,
          config.train.metric_pairs, features, moved)
    stats = None
  if stats is None:
    logging.info('Stage statistics: pairwise distance statistics over %d sampled pairs.', config.stats.num_pairs)
    inputs = inputs_lib.for_config(config, inputs)
    faces = inputs.faces('train', max_examples=config.stats.max_examples)['embedding']
    notes = inputs.notes('train')
    audio = notes['audio'][:config.stats.max_examples]
    feats = loops.batched(jax.jit(lambda a: embedding_lib.phi(metric, a, config)), audio, batch_size=256)
    mu_x, sigma_x = pairwise_distance_stats(faces, config.stats.num_pairs, config.seed)
    pitch = notes['pitch'][:config.stats.max_examples] if audio_pairs == 'same_pitch' else None
    mfcc = feats[:, feats.shape[-1] - config.mfcc.n_mfcc:]  # phi's MFCC half.
    mu_y, sigma_y = pairwise_distance_stats(mfcc if features == 'mfcc' else feats, config.stats.num_pairs,
                                            config.seed + 1, within=pitch)
    stats = {
        'mu_x': mu_x,
        'sigma_x': sigma_x,
        'mu_y': mu_y,
        'sigma_y': sigma_y,
        'num_faces': int(len(faces)),
        'num_notes': int(len(audio)),
        'num_pairs': config.stats.num_pairs,
        'audio_pairs': audio_pairs,
        'metric_features': features,
    }
    if features == 'both':
      stats['mu_y_mfcc'], stats['sigma_y_mfcc'] = pairwise_distance_stats(mfcc, config.stats.num_pairs, config.seed + 1,
                                                                          within=pitch)
    files.write_json(path, stats, checksum=True)
    logging.info('Statistics: %s', stats)
  keys = losses.statistics_keys(features)
  if min(stats[k] for k in keys if k.startswith('sigma')) <= 0:
    raise ValueError(f'{path}: a pairwise distance std is 0 (all examples identical?): {stats}')
  return {k: stats[k] for k in keys}


def ensure_family_faces_center(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray | None:
  """The centre of the family-marginal loss's faces (config train.family_faces_center): None for the batch's mean,
  else the mean embedding [E] of the faces file it names, read once and kept in the workdir's
  family_faces_center.json, which a resumed run uses (a record of another file is set aside and the mean read again).

  Raises:
    evaluators.photos.PhotoFacesError: the faces file is missing, corrupt, or of another face embedder.
  """
  source = config.train.family_faces_center
  if not source:
    return None
  path = os.path.join(workdir, 'family_faces_center.json')
  recorded = _read_json(path, ('source', 'center'))
  if recorded is not None and (recorded['source'] != source or len(recorded['center']) != config.data.embedding_dim):
    if jax.process_index() == 0:
      moved = files.set_aside(path, 'config', label='stale')
      logging.warning('%s held the mean of %s, the config names %s: set aside as %s; read again.', path,
                      recorded['source'], source, moved)
    recorded = None
  if recorded is None:
    from face2music_jax.evaluators import photos  # pylint: disable=import-outside-toplevel
    from face2music_jax.faces import embedding as face_embedding  # pylint: disable=import-outside-toplevel
    faces = photos.load_faces(source)
    photos.check_embedder(faces, face_embedding.embedder_tag(config), source)
    center = np.mean(np.asarray(faces['embedding'], np.float64), axis=0)
    recorded = {'source': source, 'num_faces': int(len(faces['embedding'])), 'center': center.tolist()}
    if jax.process_index() == 0:
      files.write_json(path, recorded, checksum=True)
    logging.info('The family-marginal loss draws its faces around the mean of the %d faces of %s.',
                 recorded['num_faces'], source)
  return np.asarray(recorded['center'], np.float32)
