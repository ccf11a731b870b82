"""Evaluation of a trained face2music model: the paper's Table 1 metrics, its Figures 2 and 3, and an HTML page.

`evaluate(config, workdir)` restores the generator of the latest GAN checkpoint of `workdir`, translates N faces
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
||phi(y_i) - phi(y_j)|| of the translations, computed at one fixed pitch at a time over the held-out faces of the
listening measures and averaged over the listening pitches (`pearson_correlation`; a pitch drawn per face would
add audio distance that the faces cannot explain), and, for comparison, over the N translations at their drawn
pitches with pairs of one face with itself left out (`pearson_correlation_random_pitch`); the silhouette value of
the faces in face space, each labelled with the family whose real-note centroid in phi space is nearest to its
translation; the number of families the frozen family classifier names (exp of the entropy of their shares, and the
largest share), over all N translations and over the held-out faces' alone, each with a 95% bootstrap interval over
the people drawn (`classified_families_intervals`). Reference rows (`reference_rows`): FID and IS of the real test
notes, white noise and harmonic tones through the same classifiers, against the same N real notes: the floor and
ceiling of each column; and, for the FID floor, another draw of up to N training notes disjoint from those N
(`real_train_notes`: real against real at the same pitch distribution).

Evaluation runs in one process; the generator, phi and the classifiers are jitted over batches of
config.eval.batch_size.
"""

import functools
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import gan
from face2music_jax import loops
from face2music_jax import metrics
from face2music_jax import plots
from face2music_jax import progress
from face2music_jax import report
from face2music_jax import stages
from face2music_jax.audio import wav as wav_lib
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import correlation
from face2music_jax.evaluators import fidelity
from face2music_jax.evaluators import listening as listening_eval
from face2music_jax.models import audio_embedding as embedding_lib

EVAL_DIR = 'eval'
METRICS_FILE = 'metrics.json'


class EvaluationError(RuntimeError):
  """Evaluation cannot run: its output exists already, or an input is unusable; the message says which."""


def load_faces(inputs: inputs_lib.Inputs, images: bool = True) -> dict[str, np.ndarray]:
  """Test faces, then training faces: 'embedding' [M, E], 'name', 'split' [M] and, with `images`, 'image'
  [M, S, S, 3] in [0, 1]."""
  parts = []
  for split in ('test', 'train'):
    faces = inputs.faces_with_images(split) if images else inputs.faces(split)
    keys = ('embedding', 'name', 'image') if images else ('embedding', 'name')
    parts.append({**{k: faces[k] for k in keys}, 'split': np.full(len(faces['name']), split)})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def eval_dir(workdir: str, step: int | None = None) -> str:
  """Where the evaluation of `workdir` goes: `<workdir>/eval/`, or `<workdir>/eval_step<N>/` for checkpoint N."""
  return os.path.join(workdir, EVAL_DIR if step is None else f'{EVAL_DIR}_step{step}')


def evaluate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
             inputs: inputs_lib.Inputs | None = None, step: int | None = None) -> dict[str, Any]:
  """Computes the metrics, figures and HTML page of the latest checkpoint in `workdir` (module docstring), or of
  checkpoint `step` (into `eval_step<N>/`: `eval_dir`).

  Args:
    config: the config the model was trained with.
    workdir: the training work directory; the outputs go to `<workdir>/eval/` (`eval_step<N>/` with `step`).
    overwrite: replace an existing output directory; otherwise its existence is an error.
    inputs: the loader of the data; reused if it serves the config's data (`data.inputs.for_config`), e.g. by the
      experiment runner, whose cells share one.

  Returns:
    The contents of metrics.json.
  """
  config_lib.validate(config)
  e = config.eval
  for field in ('num_page_examples', 'faces_per_family'):
    if e[field] <= 0:
      raise config_lib.ConfigError(f'config.eval.{field} = {e[field]!r} is invalid: expected a positive number.')
  out_dir = eval_dir(workdir, step)
  if os.path.exists(out_dir) and not overwrite:
    raise EvaluationError(f'{out_dir} exists already: pass --overwrite (overwrite=True) to replace it.')
  files.check_writable(workdir, 'work directory')  # Before the work, not at the first figure.
  timer = progress.PhaseTimer()
  generator, g_vars, step = gan.restore_generator(config, workdir, step)
  logging.info('Evaluating the checkpoint at step %d of %s.', step, workdir)

  stages.ensure_data(config)
  inputs = inputs_lib.for_config(config, inputs)
  metric = stages.ensure_audio_embedding(config, workdir, inputs)
  classifiers = stages.ensure_classifiers(config, workdir, inputs)
  families = config_lib.family_names(config)
  n = e.num_translations
  rng = np.random.default_rng(e.seed)

  faces = load_faces(inputs)
  face_index = np.arange(n) % len(faces['name'])
  notes = inputs.notes('train')
  order = rng.permutation(len(notes['pitch']))
  real_index = np.resize(order, n)
  # Another draw of training notes, disjoint from those (where the split allows): the FID floor, real against real
  # at the same pitch distribution.
  other_real = notes['audio'][order[n:2 * n]] if len(order) > n + 1 else None
  real_audio, real_family = notes['audio'][real_index], notes['family'][real_index]
  # Each translation takes the pitch of a real note: the two sets share one pitch distribution.
  pitch = notes['pitch'][real_index].astype(np.int32)
  z = faces['embedding'][face_index]
  timer.lap('inputs')  # Checkpoint, prerequisite artefacts, faces and notes.

  generate = functools.partial(gan.make_generate(generator), g_vars)
  fake_audio = loops.batched(generate, z, pitch, batch_size=e.batch_size)
  timer.lap('translation')
  phi = jax.jit(lambda a: embedding_lib.phi(metric, a, config))
  real_phi = loops.batched(phi, real_audio, batch_size=e.batch_size)
  fake_phi = loops.batched(phi, fake_audio, batch_size=e.batch_size)
  timer.lap('audio_metric')

  references = fidelity.reference_audio(config, inputs.notes('test')['audio'], pitch)
  if other_real is not None:
    references = {'real_train_notes': other_real, **references}
  fid = fidelity.evaluate(config, classifiers, real_audio, fake_audio, references)
  result, reference_rows = dict(fid['metrics']), fid['reference_rows']
  # The families the frozen family classifier names (phi, where the families below are assigned, is what Eq. 1 and A
  # train in; the classifier is not).
  named = fid['classified']['family']
  classified = metrics.family_distribution(named, families)
  result['effective_families_classifier'] = classified['effective_number']
  result['largest_family_share_classifier'] = classified['largest_share']
  # The same over the held-out faces' translations alone (80 of 400 with the embedded faces; the rest translate
  # training faces), and 95% intervals of both over the people drawn (each resample draws people with all their
  # translations).
  people, held_out = faces['name'][face_index], faces['split'][face_index] == 'test'
  classified_held_out = metrics.family_distribution(named[held_out], families) if held_out.any() else None
  result['effective_families_classifier_held_out'] = (None if classified_held_out is None else
                                                      classified_held_out['effective_number'])
  result['largest_family_share_classifier_held_out'] = (None if classified_held_out is None else
                                                        classified_held_out['largest_share'])
  family_intervals = {
      'all': metrics.family_distribution_interval(named, people, families),
      'held_out': metrics.family_distribution_interval(named[held_out], people[held_out], families),
      'num_translations_held_out': int(held_out.sum()),
  }
  timer.lap('classifiers_fid_is')

  test_faces = {k: v[faces['split'] == 'test'] for k, v in faces.items()}
  listening_measures, listened = listening_eval.evaluate(config, inputs, generate, test_faces)
  result['in_tune_50c'] = listening_measures['rows']['translations']['in_tune_50c']
  result['flatness_median'] = listening_measures['rows']['translations']['flatness']['median']
  result['distinctness'] = listening_measures['rows']['translations']['distinctness']['mean']
  pure = listening_measures['pure_tones']
  result['pure_tones'] = listening_measures['rows']['translations']['pure_tones']
  result['end_db_max'] = listening_measures['rows']['translations']['end_db']['max']
  real_pure = [v for v in pure['real_notes'].values() if v is not None]  # Each listening pitch counts alike.
  result['pure_tones_real'] = float(np.mean(real_pure)) if real_pure else None
  timer.lap('listening')

  correlation_measures = correlation.evaluate(
      listened_faces=test_faces['embedding'][listened['face_index']],
      listened_phi=loops.batched(phi, listened['audio'], batch_size=e.batch_size), listened_mfcc=listened['mfcc'],
      listened_midi=listened['midi_pitch'], listened_identity=test_faces['name'][listened['face_index']], z=z,
      fake_phi=fake_phi, face_index=face_index, real_phi=real_phi, real_family=real_family, num_families=len(families))
  result.update(correlation_measures['metrics'])
  assigned, counts, per_pitch = (correlation_measures['assigned'], correlation_measures['family_counts'],
                                 correlation_measures['pearson_per_pitch'])
  in_phi = metrics.family_distribution(assigned, families)  # Nearest real family centroid in phi.
  result['effective_families'] = in_phi['effective_number']
  result['largest_family_share'] = in_phi['largest_share']
  notes_text = list(correlation_measures['notes'])
  for note in notes_text:
    logging.warning(note)
  timer.lap('pearson_silhouette')

  summary = {
      'checkpoint_step': step,
      'config_name': config.name,
      'config_size': config.size,
      'training_seed': config.seed,
      'workdir': workdir,
      'num_translations': n,
      'seed': e.seed,
      'num_faces': len(faces['name']),
      'num_real_notes': int(len(notes['pitch'])),
      'metrics': {
          k: v if isinstance(v, int) else metrics.json_float(v) for k, v in result.items()
      },
      'assigned_families': {
          families[i]: int(c) for i, c in enumerate(counts)
      },
      'classified_families': classified['counts'],
      # 95% bootstrap intervals over the people ({'effective_number': (low, high), 'largest_share': (low, high)}, None
      # under 5 people): of all translations' classified families, and of the held-out faces' alone.
      'classified_families_intervals': family_intervals,
      'pearson_per_pitch': {
          str(p): r for p, r in per_pitch.items()
      },
      'pearson_mfcc_per_pitch': {
          str(p): r for p, r in correlation_measures['pearson_mfcc_per_pitch'].items()
      },
      'reference_rows': reference_rows,
      'listening': listening_measures,
      'notes': notes_text,
  }
  unique = min(n, len(faces['name']))  # Translations of distinct faces, for the figures of faces.
  with files.building(out_dir) as build_dir:  # All of eval/ or none of it (a full disk, Ctrl-C).
    plots.audio_tsne(real_phi, real_family, fake_phi, families, os.path.join(build_dir, plots.AUDIO_TSNE), e.seed)
    plots.face_tsne(z[:unique], assigned[:unique], families, os.path.join(build_dir, plots.FACE_TSNE), e.seed)
    plots.face_grid(faces['image'][face_index[:unique]], assigned[:unique], families,
                    os.path.join(build_dir, plots.FACE_GRID), e.faces_per_family)
    timer.lap('figures')
    examples = _write_examples(build_dir, config, faces, face_index, pitch, fake_audio, assigned, families)
    listening_rows = _write_listening_examples(build_dir, config, test_faces, listened)
    timer.lap('examples')
    summary['seconds'] = timer.seconds
    files.write_text(os.path.join(build_dir, METRICS_FILE), json.dumps(summary, indent=2))
    report.write_page(os.path.join(build_dir, report.PAGE), summary, examples,
                      [plots.AUDIO_TSNE, plots.FACE_TSNE, plots.FACE_GRID], listening_rows)
  logging.info('Evaluation of step %d: %s', step, json.dumps(summary['metrics']))
  logging.info('Wrote %s (open %s in a browser).', out_dir, os.path.join(out_dir, report.PAGE))
  return summary


def _write_listening_examples(directory: str, config: ml_collections.ConfigDict, faces: dict[str, np.ndarray],
                              listened: dict[str, Any]) -> list[report.ListeningRow]:
  """Writes listening/face_XX.png and listening/face_XX_midiYY.wav for one view of each held-out identity (up to
  config.eval.listening_faces); returns the page's rows (a face with its notes at every listening pitch)."""
  os.makedirs(os.path.join(directory, 'listening'))
  num_faces = config.eval.listening_faces  # Every held-out identity (one view each).
  rows, seen = [], set()
  for face in listened['face_index']:
    name = str(faces['name'][face])
    if name in seen or len(seen) >= num_faces:
      continue
    seen.add(name)
    image_path = f'listening/face_{len(rows):02d}.png'
    image = np.clip(faces['image'][face] * 255, 0, 255).round().astype(np.uint8)
    Image.fromarray(image).save(os.path.join(directory, image_path))
    notes = []
    for j in np.flatnonzero(listened['face_index'] == face):
      midi = int(listened['midi_pitch'][j])
      wav = f'listening/face_{len(rows):02d}_midi{midi}.wav'
      wav_lib.write_wav(os.path.join(directory, wav), listened['audio'][j], config.audio.sample_rate)
      f0, cents = listened['f0_hz'][j], listened['cents'][j]
      notes.append(
          report.ListeningNote(audio=wav, midi_pitch=midi, f0_hz=None if np.isnan(f0) else float(f0),
                               cents=None if np.isnan(cents) else float(cents),
                               flatness=float(listened['flatness'][j])))
    rows.append(report.ListeningRow(face=image_path, name=name, notes=sorted(notes, key=lambda n: n.midi_pitch)))
  return rows


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
    wav_lib.write_wav(os.path.join(directory, wav), audio[i], config.audio.sample_rate)
    examples.append(
        report.Example(face=face, audio=wav, name=str(faces['name'][face_index[i]]),
                       split=str(faces['split'][face_index[i]]),
                       midi_pitch=config_lib.midi_pitch(config, int(pitch[i])), family=families[assigned[i]]))
  return examples


def human_summary(summary: dict[str, Any], out_dir: str | None = None) -> str:
  """A few lines for a person: what was evaluated, the headline measures with their scales, where the rest is
  (`out_dir`, by default the work directory's `eval/`)."""
  m, rows = summary['metrics'], summary['listening']['rows']

  def number(value, spec):
    return 'n/a' if value is None else format(value, spec)

  real = rows['real_test_notes']
  out_dir = out_dir or eval_dir(summary['workdir'])
  return '\n'.join([
      f"Evaluated {summary['config_name']} ({summary['config_size']}) at step {summary['checkpoint_step']}: "
      f"{summary['num_translations']} translations, {summary['listening']['num_faces']} held-out faces at MIDI "
      f"{', '.join(str(p) for p in summary['listening']['pitches'])}.",
      f"  in tune (pyin, +-50 cents) {number(m['in_tune_50c'], '.0%')}   (real notes {number(real['in_tune_50c'], '.0%')})",
      f"  distinctness {number(m['distinctness'], '.2f')}   (1 = as varied as real instruments, 0 = all alike)",
      f"  spectral flatness {number(m['flatness_median'], '.1e')}   (real notes {real['flatness']['median']:.1e}, "
      'white noise 0.56)',
      f"  loudest end {number(m['end_db_max'], '.1f')} dB   (the last 10 ms under the note's peak; a release is at "
      f"most -30 dB; real notes {real['end_db']['max']:.1f} dB)",
      f"  pure tones {number(m['pure_tones'], '.0%')}   (real notes at those pitches "
      f"{number(m['pure_tones_real'], '.0%')}; a pure tone: the fundamental above 90% of the energy up to the 8th "
      'harmonic)',
      f"  FID pitch {number(m['fid_pitch'], '.1f')}, IS pitch {number(m['inception_score_pitch'], '.1f')} "
      f"(real {number(m['inception_score_pitch_real'], '.1f')}), Pearson {number(m['pearson_correlation'], '.2f')} "
      f"(MFCC ruler {number(m.get('pearson_mfcc'), '.2f')})",
      f"  families named by the family classifier {number(m.get('effective_families_classifier'), '.2f')}, the "
      f"held-out faces' alone {number(m.get('effective_families_classifier_held_out'), '.2f')}   (effective number, "
      f"1 to {m['inception_score_family_max']})",
      f'All measures: {os.path.join(out_dir, METRICS_FILE)}; listen: {os.path.join(out_dir, report.PAGE)}',
  ])
