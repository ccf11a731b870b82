"""Evaluation of a trained face2music model: the paper's Table 1 metrics, its Figures 2 and 3, and an HTML page.

`evaluate(config, workdir)` restores the latest GAN checkpoint of `workdir`, translates N faces
(N = config.eval.num_translations; the test faces first, then the training faces, cycled when there are fewer
than N) at pitches drawn with the real notes (seeded with config.eval.seed), and writes `<workdir>/eval/`:

  metrics.json           checkpoint step, config name/size, N, seed, the metrics below and seconds per phase
  tsne_audio.png         tSNE of the audio metric space: real notes coloured by family, translations in red
  tsne_faces.png         tSNE of the face space, faces coloured by the family assigned to their translation
  faces_by_family.png    faces grouped by assigned family, one row per family
  index.html             faces beside their translated notes (faces/*.png, audio/*.wav), the metrics, the figures

Metrics: the pitch and family classifiers' test accuracies; FID (penultimate features) and Inception Score
(softmax; its maximum is the number of classes) of the translations with each classifier, against N real notes;
the Pearson correlation between pairwise face distances ||f_i - f_j|| and pairwise audio metric distances
||phi(y_i) - phi(y_j)|| of the translations; the silhouette value of the faces in face space, each labelled with
the family whose real-note centroid in phi space is nearest to its translation.

Evaluation runs in one process; the generator, phi and the classifiers are jitted over batches of
config.eval.batch_size.
"""

import json
import os
import shutil
import time
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
import soundfile
from absl import logging
from PIL import Image
from scipy import linalg
from scipy import stats
from scipy.spatial import distance
from sklearn import metrics as sk_metrics

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import parallel
from face2music_jax import plots
from face2music_jax import report
from face2music_jax import stages
from face2music_jax import train
from face2music_jax.audio import embedding as embedding_lib
from face2music_jax.data import audio as audio_data
from face2music_jax.data import faces as face_data
from face2music_jax.train_step import Models

EVAL_DIR = 'eval'
METRICS_FILE = 'metrics.json'


class EvaluationError(RuntimeError):
  """Evaluation cannot run: its output exists already, or an input is unusable; the message says which."""


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two feature sets (FID when the features are a classifier's).

  ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

  Args:
    features_a: [N, D] features of one set.
    features_b: [M, D] features of the other.

  Returns:
    The distance, >= 0 up to round-off.
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  # With fewer examples than features the covariances are singular: sqrtm warns and leaves round-off imaginary
  # parts, which the real part drops.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', linalg.LinAlgWarning)
    covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray) -> float:
  """Inception Score exp(E_x KL(p(c|x) || p(c))) of class probabilities: 1 (uninformative) to the class count.

  Args:
    probs: [N, C] softmax outputs of a classifier, rows summing to 1.
  """
  probs = np.asarray(probs, np.float64)
  marginal = probs.mean(0, keepdims=True)
  return float(np.exp(np.mean(stats.entropy(probs, np.broadcast_to(marginal, probs.shape), axis=1))))


def distance_correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Pearson correlation between the pairwise L2 distances within x and within y (same rows, other spaces).

  Args:
    x: [N, Dx], e.g. face embeddings f(x_i).
    y: [N, Dy], e.g. the audio metric phi(y_i) of their translations.

  Returns:
    (r, p-value) over the N (N - 1) / 2 pairs; NaN when the distances in one space are all equal.
  """
  if len(x) != len(y) or len(x) < 3:
    raise ValueError(f'Need two sets of equally many (>= 3) rows, got {len(x)} and {len(y)}.')
  dx, dy = distance.pdist(np.asarray(x, np.float64)), distance.pdist(np.asarray(y, np.float64))
  if np.ptp(dx) == 0 or np.ptp(dy) == 0:
    return float('nan'), float('nan')
  result = stats.pearsonr(dx, dy)
  return float(result.statistic), float(result.pvalue)


def nearest_centroid_labels(points: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
  """Labels each point with the label whose centroid (mean of its reference rows) is nearest in L2.

  Args:
    points: [N, D].
    reference: [M, D] labelled points, e.g. phi of real notes.
    reference_labels: [M] int labels, e.g. families; only labels present get a centroid.

  Returns:
    [N] int labels.
  """
  labels = np.unique(reference_labels)
  centroids = np.stack([reference[reference_labels == label].mean(0) for label in labels])
  return labels[np.argmin(distance.cdist(points, centroids), axis=1)]


def silhouette_value(x: np.ndarray, labels: np.ndarray) -> float | None:
  """Mean silhouette coefficient of rows x [N, D] under int labels [N] (sklearn's silhouette_score, L2).

  Returns:
    A value in [-1, 1], or None when it is undefined: fewer than 2 distinct labels, or every row its own label.
  """
  num_labels = len(np.unique(labels))
  if num_labels < 2 or num_labels > len(x) - 1:
    return None
  return float(sk_metrics.silhouette_score(x, labels, metric='euclidean'))


def load_config(workdir: str, config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """`config` if given, else the resolved config that training wrote to `<workdir>/config.json`."""
  if config is not None:
    return config
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise EvaluationError(f'No --config given and no {path}: pass the config the model was trained with.')
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the config files use (membership tests such as notes.exclude need tuples)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def restore_generator(config: ml_collections.ConfigDict, workdir: str) -> tuple[Models, dict[str, Any], int]:
  """The generator's variables at the latest GAN checkpoint of `workdir`.

  Returns:
    (models, generator variables {'params', 'batch_stats'}, checkpoint step).

  Raises:
    checkpoint.CheckpointError: no checkpoint, or one written with another config.
  """
  directory = os.path.join(workdir, 'checkpoints')
  # Checked first: the manager would create the directory.
  step = None
  if os.path.isdir(directory):
    manager = checkpoint.manager(directory, config.train.keep_checkpoints)
    step = manager.latest_step()
  if step is None:
    raise checkpoint.CheckpointError(f'No GAN checkpoint in {directory}: train first, e.g. python run_train.py '
                                     f'--config=configs/{config.name}.py:{config.size} --workdir={workdir}')
  mesh = parallel.make_mesh()
  models = Models(config)
  like = jax.jit(models.init, out_shardings=parallel.replicated(mesh))(jax.random.key(config.seed))
  state = train.restore_state(manager, step, like)
  return models, state.g, step


def _load_faces(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Test faces, then training faces: 'embedding' [M, E], 'image' [M, S, S, 3] in [0, 1], 'name', 'split' [M]."""
  parts = []
  for split in ('test', 'train'):
    faces = face_data.load_faces(face_data.face_files(config, split), config.data.face_image_size,
                                 embedding_dim=config.data.embedding_dim)
    parts.append({'embedding': faces['embedding'], 'image': faces['image'], 'name': faces['name'],
                  'split': np.full(len(faces['name']), split)})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _classify(config: ml_collections.ConfigDict, kind: str, params: Any, audio: np.ndarray) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
  """(softmax [N, C], penultimate features [N, F]) of a frozen classifier."""
  model = stages.classifier_model(config, kind)

  @jax.jit
  def apply(a):
    logits, features = model.apply({'params': params}, a)
    return jax.nn.softmax(logits), features

  return stages.batched(apply, audio, batch_size=config.eval.batch_size)


class _PhaseTimer:
  """Wall seconds of consecutive phases, for metrics.json's 'seconds' entry."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self._last = time.perf_counter()

  def lap(self, phase: str) -> None:
    now = time.perf_counter()
    self.seconds[phase] = round(now - self._last, 3)
    self._last = now


def _json_float(value: float | None) -> float | None:
  """JSON has no NaN: undefined values are written as null (the 'notes' entry says why)."""
  return None if value is None or not np.isfinite(value) else float(value)


def evaluate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> dict[str, Any]:
  """Computes the metrics, figures and HTML page of the latest checkpoint in `workdir` (module docstring).

  Args:
    config: the config the model was trained with.
    workdir: the training work directory; the outputs go to `<workdir>/eval/`.
    overwrite: replace an existing `<workdir>/eval/`; otherwise its existence is an error.

  Returns:
    The contents of metrics.json.
  """
  config_lib.validate(config)
  e = config.eval
  for field in ('num_page_examples', 'faces_per_family'):
    if e[field] <= 0:
      raise config_lib.ConfigError(f'config.eval.{field} = {e[field]!r} is invalid: expected a positive number.')
  out_dir = os.path.join(workdir, EVAL_DIR)
  if os.path.exists(out_dir) and not overwrite:
    raise EvaluationError(f'{out_dir} exists already: pass --overwrite (overwrite=True) to replace it.')
  stages.check_writable(workdir, 'work directory')  # Before the work, not at the first figure.
  timer = _PhaseTimer()
  models, g_vars, step = restore_generator(config, workdir)
  logging.info('Evaluating the checkpoint at step %d of %s.', step, workdir)

  stages.ensure_data(config)
  metric = stages.ensure_audio_embedding(config, workdir)
  classifiers = stages.ensure_classifiers(config, workdir)
  families = audio_data.family_names(config)
  n = e.num_translations
  rng = np.random.default_rng(e.seed)

  faces = _load_faces(config)
  face_index = np.arange(n) % len(faces['name'])
  notes = stages.load_notes(config, 'train')
  real_index = np.resize(rng.permutation(len(notes['pitch'])), n)
  real_audio, real_family = notes['audio'][real_index], notes['family'][real_index]
  # Each translation takes the pitch of a real note: the two sets share one pitch distribution.
  pitch = notes['pitch'][real_index].astype(np.int32)
  z = faces['embedding'][face_index]
  timer.lap('inputs')  # Checkpoint, prerequisite artefacts, faces and notes.

  generate = jax.jit(lambda zz, p: models.generate(g_vars, zz, p, train=False)[0])
  fake_audio = stages.batched(generate, z, pitch, batch_size=e.batch_size)
  timer.lap('translation')
  phi = jax.jit(lambda a: embedding_lib.phi(metric, a, config))
  real_phi = stages.batched(phi, real_audio, batch_size=e.batch_size)
  fake_phi = stages.batched(phi, fake_audio, batch_size=e.batch_size)
  timer.lap('audio_metric')

  result: dict[str, Any] = {}
  notes_text = []
  for kind in ('pitch', 'family'):
    real_probs, real_features = _classify(config, kind, classifiers[kind], real_audio)
    fake_probs, fake_features = _classify(config, kind, classifiers[kind], fake_audio)
    result[f'{kind}_test_accuracy'] = classifiers['metrics'][f'{kind}_test_accuracy']
    result[f'fid_{kind}'] = frechet_distance(real_features, fake_features)
    result[f'inception_score_{kind}'] = inception_score(fake_probs)
    result[f'inception_score_{kind}_real'] = inception_score(real_probs)
    result[f'inception_score_{kind}_max'] = real_probs.shape[1]
  timer.lap('classifiers_fid_is')

  r, p_value = distance_correlation(z, fake_phi)
  result['pearson_correlation'], result['pearson_p_value'] = r, p_value
  if not np.isfinite(r):
    notes_text.append('pearson_correlation is undefined: all pairwise distances in one space are equal.')
  assigned = nearest_centroid_labels(fake_phi, real_phi, real_family)
  result['silhouette_value'] = silhouette_value(z, assigned)
  counts = np.bincount(assigned, minlength=len(families))
  if result['silhouette_value'] is None:
    notes_text.append(f'silhouette_value is undefined: the translations were assigned to {np.count_nonzero(counts)} '
                      f'famil{"y" if np.count_nonzero(counts) == 1 else "ies"}; it needs 2 to N - 1.')
    logging.warning(notes_text[-1])
  timer.lap('pearson_silhouette')

  summary = {
      'checkpoint_step': step, 'config_name': config.name, 'config_size': config.size, 'workdir': workdir,
      'num_translations': n, 'seed': e.seed, 'num_faces': len(faces['name']),
      'num_real_notes': int(len(notes['pitch'])),
      'metrics': {k: v if isinstance(v, int) else _json_float(v) for k, v in result.items()},
      'assigned_families': {families[i]: int(c) for i, c in enumerate(counts)},
      'notes': notes_text,
  }
  build_dir = f'{out_dir}.incomplete'
  if os.path.exists(build_dir):
    shutil.rmtree(build_dir)
  os.makedirs(build_dir)
  unique = min(n, len(faces['name']))  # Translations of distinct faces, for the figures of faces.
  plots.audio_tsne(real_phi, real_family, fake_phi, families, os.path.join(build_dir, plots.AUDIO_TSNE), e.seed)
  plots.face_tsne(z[:unique], assigned[:unique], families, os.path.join(build_dir, plots.FACE_TSNE), e.seed)
  plots.face_grid(faces['image'][face_index[:unique]], assigned[:unique], families,
                  os.path.join(build_dir, plots.FACE_GRID), e.faces_per_family)
  timer.lap('figures')
  examples = _write_examples(build_dir, config, faces, face_index, pitch, fake_audio, assigned, families)
  timer.lap('examples')
  summary['seconds'] = timer.seconds
  with open(os.path.join(build_dir, METRICS_FILE), 'w') as f:
    json.dump(summary, f, indent=2)
  report.write_page(os.path.join(build_dir, report.PAGE), summary, examples,
                    [plots.AUDIO_TSNE, plots.FACE_TSNE, plots.FACE_GRID])
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(build_dir, out_dir)
  logging.info('Evaluation of step %d: %s', step, json.dumps(summary['metrics']))
  logging.info('Wrote %s (open %s in a browser).', out_dir, os.path.join(out_dir, report.PAGE))
  return summary


def _write_examples(directory: str, config: ml_collections.ConfigDict, faces: dict[str, np.ndarray],
                    face_index: np.ndarray, pitch: np.ndarray, audio: np.ndarray, assigned: np.ndarray,
                    families: tuple[str, ...]) -> list[report.Example]:
  """Writes faces/face_XXX.png and audio/translation_XXX.wav of the first examples; returns them for the page."""
  os.makedirs(os.path.join(directory, 'faces'))
  os.makedirs(os.path.join(directory, 'audio'))
  examples = []
  for i in range(min(config.eval.num_page_examples, len(audio))):
    face, wav = f'faces/face_{i:03d}.png', f'audio/translation_{i:03d}.wav'
    image = np.clip(faces['image'][face_index[i]] * 255, 0, 255).round().astype(np.uint8)
    Image.fromarray(image).save(os.path.join(directory, face))
    # 16-bit PCM: every browser plays it (float WAV is not universally supported).
    soundfile.write(os.path.join(directory, wav), audio[i], config.audio.sample_rate, subtype='PCM_16')
    examples.append(report.Example(face=face, audio=wav, name=str(faces['name'][face_index[i]]),
                                   split=str(faces['split'][face_index[i]]),
                                   midi_pitch=int(pitch[i]) + config.audio.pitch_min,
                                   family=families[assigned[i]]))
  return examples
