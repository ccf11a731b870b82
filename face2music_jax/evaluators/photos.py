"""Judging a trained model on any folder of photos: every face found -> notes at the listening pitches -> measures.

The held-out faces of the default data are tiny greyscale crops; what users give the model are colour photos.
`evaluate_photos` translates every face the detector finds in every photo of a folder at each listening pitch and
measures what a listener and a researcher would, with tools the model never trains against:

  in_tune_wide    pYIN over its wide range (MIDI 24-96), within 50 cents (audio/listening.py)
  in_tune_near    pYIN searching only the requested pitch +-13 semitones: an octave error is out of tune
  flatness        librosa's spectral flatness (median over frames and clips)
  pure_tones      the fraction of notes whose fundamental carries more than 90% of the energy up to the 8th
                  harmonic (a near sine; audio/listening.py), and the same for the real notes of each listening
                  pitch (`pure_tones_real`, the mean over pitches in the headline)
  distinctness    MFCC distance between translations of different faces / between real notes, per pitch
  pearson_model   Pearson of pairwise distances: the model's face embedding f(x) vs phi(y), per pitch
  pearson_independent   Pearson of pairwise distances of an independent face descriptor (dlib's 128-d embedding of
                  the face as it is in the photo) vs MFCC means of the notes (librosa), per pitch; with its 95%
                  bootstrap interval over the faces (`pearson_independent_interval`, of the mean over pitches):
                  how much the figure owes to which faces the set holds
  closest_pair    the two different faces whose notes are closest (MFCC distance / real notes' mean distance)
  families        the nearest real family (centroid in phi space) of every translation: counts, the largest
                  share, and the effective number exp(entropy) of families
  families_classifier   the same with the family the frozen family classifier (trained on the real notes, the
                  yardstick of FID-family) names for each note: phi is what Eq. 1 and A train in, the classifier
                  is not; beside it the same for the real notes at the listening pitches
                  (`real_families_classifier`), and the 95% bootstrap intervals over the faces of its effective
                  number and largest share (`effective_families_classifier_interval`,
                  `largest_family_share_classifier_interval`)
  end_db          how far below its peak each note ends (last 10 ms): a release is <= -30 dB

Outputs in `out_dir`: metrics.json, faces/*.png (each face as found), notes/*.wav, and index.html, a page with every
face beside its notes.

The faces found in a folder can be saved to one file (`save_faces`; `face2music export_data --photos=DIR`) and
judged from it where dlib is not installed (an accelerator machine): `evaluate_photos` takes that file in place of
the folder, and gives the measures the folder gives.
"""

import html
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image
from scipy.spatial import distance

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import loops
from face2music_jax import metrics
from face2music_jax import translator as translator_lib
from face2music_jax.audio import listening
from face2music_jax.audio import wav as wav_lib
from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import images as images_lib


def photo_files(directory: str) -> list[str]:
  """The image files of a folder (not recursive), sorted by name.

  Raises:
    images.ImageError (a ValueError, reported by the commands in one line): naming the folder, if it does not exist
      or holds no image.
  """
  if not os.path.isdir(directory):
    raise images_lib.ImageError(f'Photo folder {directory} does not exist.')
  found = images_lib.image_files(directory)
  if not found:
    raise images_lib.ImageError(f'{directory} holds no image ({", ".join(images_lib.IMAGE_EXTENSIONS)}).')
  return found


FACES_FORMAT = 1
_FACE_ARRAYS = ('embedding', 'independent', 'photo', 'box', 'crop')


class PhotoFacesError(ValueError):
  """A faces file (`save_faces`) that is missing, corrupt, or of another face embedder than the model's."""


def find_faces(embedder: face_embedding.Embedder, photos: list[str]) -> dict[str, Any]:
  """Every face of every photo: `embedder`'s embeddings (the model's), independent (dlib) embeddings, boxes, crops.

  Photos without a face are skipped and listed.
  """
  independent = face_embedding.embedder_for('dlib')
  out = {'embedding': [], 'independent': [], 'photo': [], 'box': [], 'crop': []}
  skipped = []
  for path in photos:
    try:
      pixels = translator_lib.to_rgb(path)
      z, boxes = embedder.all_faces(pixels)
      z_ind, boxes_ind = independent.all_faces(pixels)
    except (face_embedding.NoFaceError, ValueError, OSError) as e:
      skipped.append(f'{os.path.basename(path)}: {e}')
      continue
    if len(boxes) != len(boxes_ind) or not np.array_equal(boxes, boxes_ind):
      raise RuntimeError(f'The face detector found different faces in {path} on two runs.')
    for k, box in enumerate(boxes):
      left, top, right, bottom = (int(v) for v in box)
      out['embedding'].append(z[k])
      out['independent'].append(z_ind[k])
      out['photo'].append(os.path.basename(path))
      out['box'].append((left, top, right, bottom))
      out['crop'].append(np.asarray(Image.fromarray(pixels[top:bottom + 1, left:right + 1]).resize((96, 96))))
  if not out['photo']:
    raise images_lib.ImageError(f'No face found in any of the {len(photos)} photos.')
  result = {k: np.asarray(v) if k != 'box' else v for k, v in out.items()}
  result['skipped'] = skipped
  return result


def save_faces(path: str, faces: dict[str, Any], embedder_tag: str, photo_dir: str) -> str:
  """Writes `find_faces`'s result (of the embedder tagged `embedder_tag`, `face_embedding.embedder_tag`) for the
  photos of `photo_dir` to `path` (.npz), atomically; returns the path."""
  import io  # pylint: disable=import-outside-toplevel
  arrays = {
      'format': np.asarray(FACES_FORMAT),
      'embedder': np.asarray(embedder_tag),
      'photo_dir': np.asarray(os.path.abspath(photo_dir)),
      'embedding': np.asarray(faces['embedding'], np.float32),
      'independent': np.asarray(faces['independent'], np.float32),
      'photo': np.asarray(faces['photo'], str),
      'box': np.asarray(faces['box'], np.int64).reshape(-1, 4),
      'crop': np.asarray(faces['crop'], np.uint8),
      'skipped': np.asarray(faces['skipped'], str).reshape(-1),
  }
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  files.write_bytes(path, buffer.getvalue())
  return path


def load_faces(path: str) -> dict[str, Any]:
  """A faces file (`save_faces`) as `find_faces` returns it, with its 'embedder' tag and 'photo_dir'.

  Raises:
    PhotoFacesError: the file is missing, not a faces file, of another format, or its arrays disagree.
  """
  import zipfile  # pylint: disable=import-outside-toplevel
  import zlib  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise PhotoFacesError(
        f'No faces file {path}: write one with face2music export_data --config=C --photos=DIR --out={path}.')
  try:
    if not zipfile.is_zipfile(path):  # (np.load would read it as a pickle, and say so.)
      raise ValueError('not an .npz archive')
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
    version = int(arrays['format'])
    faces = {k: arrays[k] for k in _FACE_ARRAYS}
    faces.update(embedder=str(arrays['embedder']), photo_dir=str(arrays['photo_dir']),
                 skipped=[str(s) for s in arrays['skipped']])
  except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise PhotoFacesError(f'{path} is not a readable faces file ({type(e).__name__}: {e}): write it again with '
                          'face2music export_data --photos=DIR.') from e
  if version != FACES_FORMAT:
    raise PhotoFacesError(f'{path} has format {version}; this version reads {FACES_FORMAT}: write it again.')
  n = len(faces['photo'])
  shapes = {k: faces[k].shape for k in _FACE_ARRAYS}
  if n == 0 or any(shape[0] != n for shape in shapes.values()) or shapes['box'][1:] != (4,) or faces['crop'].ndim != 4:
    raise PhotoFacesError(f'{path} holds arrays that do not fit together ({shapes}): write it again.')
  faces['box'] = [tuple(int(v) for v in box) for box in faces['box']]
  return faces


def check_embedder(faces: dict[str, Any], embedder_tag: str, path: str) -> None:
  """Raises PhotoFacesError if the faces of the file `path` were not embedded by the embedder tagged `embedder_tag`."""
  if faces['embedder'] != embedder_tag:
    raise PhotoFacesError(f'{path} holds faces embedded by {faces["embedder"]!r}; the model embeds faces with '
                          f'{embedder_tag!r}: write the file again with the model\'s config.')


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
  if len(a) < 3:
    return None
  r, _ = metrics.distance_correlation(a, b)
  return None if r is None or not np.isfinite(r) else float(r)


def evaluate_photos(config: ml_collections.ConfigDict, workdir: str, photo_dir: str, out_dir: str, inputs=None,
                    model: str | None = None, step: int | None = None) -> dict[str, Any]:
  """Translates every face of the photos in `photo_dir` with the model of `workdir` (or `model`), writes the measures.

  Args:
    config: the model's config.
    workdir: its training work directory (the checkpoint, and phi's artefacts for the family assignment).
    photo_dir: a folder of photos, or a faces file of one (`save_faces`), which needs no face detector.
    out_dir: where metrics.json, the faces, the notes and index.html go (replaced).
    inputs: the loader of the config's data (the real notes); built if None.
    model: a model bundle or another training work directory, judged instead of `workdir`'s generator ('shipped':
      the shipped model; None: the work directory's own). `workdir` then gives the yardsticks alone (phi, for the
      f(x)-phi Pearson and the families, and the real notes; trained there if missing), and its audio settings must
      be the model's.
    step: the checkpoint of `workdir` to judge (None: its newest); not with `model`.

  Returns:
    The contents of metrics.json.

  Raises:
    images.ImageError: a folder that does not exist or holds no image (`photo_files`).
    PhotoFacesError: a faces file that does not load, or of another face embedder than the model's.
    translator.BundleError: a bundle that does not load, or whose audio settings differ from the work directory's.
  """
  # pylint: disable=import-outside-toplevel  (TensorFlow and Orbax only for this researcher's path)
  from face2music_jax import stages
  from face2music_jax.data import inputs as inputs_lib
  from face2music_jax.evaluators import fidelity
  from face2music_jax.models import audio_embedding as embedding_lib
  if model and step is not None:
    raise ValueError('A checkpoint step names a checkpoint of the work directory\'s model, not of another model.')
  start = time.perf_counter()
  files.check_writable(os.path.dirname(os.path.abspath(out_dir)), 'output directory')
  # Before any model is loaded: a wrong folder (or faces file) is the likeliest mistake.
  try:
    saved = load_faces(photo_dir) if os.path.isfile(photo_dir) or photo_dir.endswith('.npz') else None
  except PhotoFacesError as e:  # E.g. a photo's path: say what --photos takes.
    raise PhotoFacesError(f'{str(e).rstrip(".")}; --photos takes a folder of photos or a faces file.') from e
  images = photo_files(photo_dir) if saved is None else None
  if model:
    translator = translator_lib.Translator.load(None if model == 'shipped' else os.path.abspath(model))
    differ = sorted(k for k in set(config.audio) | set(translator.config.audio)
                    if config.audio.get(k) != translator.config.audio.get(k))
    if differ:
      raise translator_lib.BundleError(
          f'The model {translator.source} and the work directory {workdir} differ in audio settings '
          f'({", ".join("audio." + k for k in differ)}): its yardsticks would not fit the notes.')
  else:
    translator = translator_lib.Translator.load(workdir, config, step)
  if saved is None:
    faces = find_faces(translator.embedder, images)
  else:
    # A bundle records the embedder it was trained with; a work directory's is its config's.
    check_embedder(saved,
                   translator.manifest.get('face_embedder') or face_embedding.embedder_tag(translator.config),
                   photo_dir)
    faces = saved
  n = len(faces['photo'])
  logging.info('%d faces in %s (%d photos skipped).', n, photo_dir, len(faces['skipped']))
  sr, pitches = config.audio.sample_rate, np.asarray(config_lib.listening_pitches(config))
  face_index = np.tile(np.arange(n), len(pitches))
  midi = np.repeat(pitches, n)
  audio = translator.generate(faces['embedding'][face_index], midi)

  stages.ensure_data(config)
  inputs = inputs_lib.for_config(config, inputs)
  notes = [inputs.notes(split) for split in ('train', 'valid', 'test')]
  ref_midi = config_lib.midi_pitch(config, np.concatenate([x['pitch'] for x in notes]))
  ref_audio = np.concatenate([x['audio'] for x in notes])
  ref_family = np.concatenate([x['family'] for x in notes])
  metric = stages.ensure_audio_embedding(config, workdir, inputs)
  phi_fn = jax.jit(lambda a: embedding_lib.phi(metric, a, config))
  phi = loops.batched(phi_fn, audio, batch_size=config.eval.batch_size)
  ref_phi = loops.batched(phi_fn, ref_audio, batch_size=config.eval.batch_size)

  f0, _ = listening.estimate_pitch(audio, sr)
  wide = np.nan_to_num(np.abs(listening.cents_off(f0, midi)), nan=np.inf) <= 50.0
  near = listening.in_tune_near(audio, midi, sr)
  flatness = listening.spectral_flatness(audio)
  pure = listening.fundamental_share(audio, midi, sr) > listening.PURE_TONE_SHARE
  ref_pure = listening.fundamental_share(ref_audio, ref_midi, sr) > listening.PURE_TONE_SHARE
  end_db = listening.end_level_db(audio, sr)
  mfcc = listening.mfcc_means(audio, sr)
  ref_mfcc = listening.mfcc_means(ref_audio, sr)
  families = config_lib.family_names(config)
  assigned = metrics.nearest_centroid_labels(phi, ref_phi, ref_family)
  family_params = stages.ensure_classifiers(config, workdir, inputs)['family']
  classified = np.argmax(fidelity.classify(config, 'family', family_params, audio)[0], axis=1)
  # The real notes at the listening pitches, as the translations are (the families' mix varies with the pitch).
  listened = np.isin(ref_midi, pitches)
  real_by_classifier = None  # None: no real note at those pitches.
  if listened.any():
    ref_classified = np.argmax(fidelity.classify(config, 'family', family_params, ref_audio[listened])[0], axis=1)
    real_by_classifier = metrics.family_distribution(ref_classified, families)

  per_pitch = {}
  closest = None
  for p in pitches:
    at = midi == p
    ref_at = ref_midi == p
    ref_mean = listening.mean_distance_between_groups(ref_mfcc[ref_at]) if ref_at.sum() >= 2 else None
    d = distance.squareform(distance.pdist(mfcc[at]))
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    pair = {
        'midi_pitch': int(p),
        'distance_over_real': float(d[i, j] / ref_mean) if ref_mean else None,
        'faces': [f'{faces["photo"][k]} {faces["box"][k]}' for k in (i, j)]
    }
    if closest is None or (pair['distance_over_real'] or 0) < (closest['distance_over_real'] or 0):
      closest = pair
    per_pitch[int(p)] = {
        'in_tune_wide': float(wide[at].mean()),
        'in_tune_near': float(near[at].mean()),
        'flatness_median': float(np.median(flatness[at])),
        'pure_tones': float(pure[at].mean()),
        'pure_tones_real': float(ref_pure[ref_at].mean()) if ref_at.any() else None,
        'distinctness': (listening.mean_distance_between_groups(mfcc[at]) / ref_mean) if ref_mean and n > 1 else None,
        'pearson_model': _pearson(faces['embedding'], phi[at]),
        'pearson_independent': _pearson(faces['independent'], mfcc[at]),
        'families': metrics.family_distribution(assigned[at], families),
    }

  in_phi = metrics.family_distribution(assigned, families)
  by_classifier = metrics.family_distribution(classified, families)
  by_classifier_interval = metrics.family_distribution_interval(classified, face_index, families)

  def mean(key):
    values = [v[key] for v in per_pitch.values() if v[key] is not None]
    return float(np.mean(values)) if values else None

  summary = {
      'workdir': workdir,
      'model': translator.source,
      'checkpoint_step': translator.manifest.get('step'),
      'photo_dir': os.path.abspath(photo_dir) if saved is None else saved['photo_dir'],
      'faces_file': None if saved is None else os.path.abspath(photo_dir),  # Judged from it, not from the folder.
      'num_photos': len(set(faces['photo'])),
      'num_faces': n,
      'skipped_photos': faces['skipped'],
      'pitches': pitches.tolist(),
      'headline': {
          'in_tune_wide_min':
              min(v['in_tune_wide'] for v in per_pitch.values()),
          'in_tune_near_min':
              min(v['in_tune_near'] for v in per_pitch.values()),
          'distinctness_min':
              min((v['distinctness'] for v in per_pitch.values() if v['distinctness'] is not None), default=None),
          'distinctness_mean':
              mean('distinctness'),
          'pearson_model':
              mean('pearson_model'),
          'pearson_independent':
              mean('pearson_independent'),
          'pearson_independent_interval':
              metrics.distance_correlation_interval(faces['independent'], [mfcc[midi == p] for p in pitches]),
          'flatness_median':
              float(np.median(flatness)),
          'pure_tones':
              float(pure.mean()),
          'pure_tones_real':
              mean('pure_tones_real'),
          'end_db_max':
              float(np.max(end_db)),
          'end_db_median':
              float(np.median(end_db)),
          'effective_families':
              in_phi['effective_number'],
          'largest_family_share':
              in_phi['largest_share'],
          'effective_families_classifier':
              by_classifier['effective_number'],
          'largest_family_share_classifier':
              by_classifier['largest_share'],
          'effective_families_classifier_interval':  # None with fewer than 5 faces.
              None if by_classifier_interval is None else by_classifier_interval['effective_number'],
          'largest_family_share_classifier_interval':
              None if by_classifier_interval is None else by_classifier_interval['largest_share'],
      },
      'families': in_phi,
      'families_classifier': by_classifier,
      'real_families_classifier': real_by_classifier,
      'closest_pair': closest,
      'per_pitch': per_pitch,
  }
  with files.building(out_dir) as build_dir:  # All of the outputs or none (a full disk, Ctrl-C).
    _write(build_dir, summary, faces, audio, midi, face_index, f0, sr)
    summary['seconds'] = round(time.perf_counter() - start, 1)
    files.write_text(os.path.join(build_dir, 'metrics.json'), json.dumps(summary, indent=2))
  return summary


def _write(out_dir: str, summary: dict[str, Any], faces: dict[str, Any], audio: np.ndarray, midi: np.ndarray,
           face_index: np.ndarray, f0: np.ndarray, sample_rate: int) -> None:
  """faces/face_XXX.png, notes/face_XXX_midiYY.wav and index.html (every face beside its notes)."""
  os.makedirs(os.path.join(out_dir, 'faces'))
  os.makedirs(os.path.join(out_dir, 'notes'))
  rows = []
  for k in range(len(faces['photo'])):
    face = f'faces/face_{k:03d}.png'
    Image.fromarray(faces['crop'][k]).save(os.path.join(out_dir, face))
    cells = []
    for j in np.flatnonzero(face_index == k):
      wav = f'notes/face_{k:03d}_midi{int(midi[j])}.wav'
      wav_lib.write_wav(os.path.join(out_dir, wav), audio[j], sample_rate)
      heard = 'unvoiced' if np.isnan(f0[j]) else f'{f0[j]:.1f} Hz'
      cells.append(f'<td><div>MIDI {int(midi[j])} (heard {heard})</div>'
                   f'<audio controls preload="metadata" src="{wav}"></audio></td>')
    rows.append(f'<tr><td><img src="{face}" alt="face {k}" width="96" height="96"><br>'
                f'{html.escape(faces["photo"][k])}</td>{"".join(cells)}</tr>')
  head = summary['headline']

  def shown(v):  # metrics.json has every digit.
    if v is None:  # E.g. the Pearson interval of fewer than 5 faces.
      return 'n/a'
    if isinstance(v, (list, tuple)) and all(isinstance(x, float) for x in v):  # An interval.
      return f'[{", ".join(f"{x:.3g}" for x in v)}]'
    return f'{v:.4g}' if isinstance(v, float) else json.dumps(v)

  table = ''.join(f'<tr><th>{html.escape(k)}</th><td>{html.escape(shown(v))}</td></tr>' for k, v in head.items())
  step = summary.get('checkpoint_step')
  model = f'Model: {summary["model"]}' + ('' if step is None else f', checkpoint step {step}')
  page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>face2music: {summary["num_faces"]} faces of {summary["num_photos"]} photos</title>'
          f'<style>body{{font-family:sans-serif;margin:1em}}td{{padding:4px;vertical-align:top}}'
          f'audio{{width:200px}}.scroll{{overflow-x:auto}}</style></head><body>'
          f'<h1>{summary["num_faces"]} faces of {summary["num_photos"]} photos</h1>'
          f'<p>{html.escape(model)}</p><table>{table}</table><h2>Every face and its notes</h2>'
          f'<div class="scroll"><table>{"".join(rows)}</table></div></body></html>')
  files.write_text(os.path.join(out_dir, 'index.html'), page)
