"""Fidelity: how the translations sound to the frozen pitch and family classifiers, against real notes.

FID (Fréchet distance of the classifiers' penultimate features) and Inception Score (of their softmax; its
maximum is the number of classes) of the translations, against real notes of the same pitch distribution, with
each classifier; and the same for reference audio (the real test notes, white noise, harmonic tones, another draw
of real notes), the floor and ceiling of each column.
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from face2music_jax import config_lib
from face2music_jax import loops
from face2music_jax import metrics
from face2music_jax.audio import listening
from face2music_jax.models.classifiers import make_classifier

KINDS = ('pitch', 'family')


def classify(config: ml_collections.ConfigDict, kind: str, params: Any,
             audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(softmax [N, C], penultimate features [N, F]) of the frozen `kind` classifier, in batches of
  config.eval.batch_size."""
  model = make_classifier(config, kind)

  @jax.jit
  def apply(a):
    logits, features = model.apply({'params': params}, a)
    return jax.nn.softmax(logits), features

  return loops.batched(apply, audio, batch_size=config.eval.batch_size)


def reference_audio(config: ml_collections.ConfigDict, test_notes: np.ndarray,
                    pitch: np.ndarray) -> dict[str, np.ndarray]:
  """The reference rows' audio: the real test notes, white noise, and harmonic tones at `pitch` (pitch classes,
  those of the real notes the translations are compared with)."""
  midi = config_lib.midi_pitch(config, pitch)
  return {
      'real_test_notes': test_notes,
      'white_noise': listening.white_noise(len(pitch), config.audio.length, seed=config.eval.seed),
      'harmonic_tone': listening.harmonic_tone(midi, config.audio.length, config.audio.sample_rate)
  }


def evaluate(config: ml_collections.ConfigDict, classifiers: dict[str, Any], real_audio: np.ndarray,
             fake_audio: np.ndarray, references: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """FID and IS of the translations and of each reference, with each classifier.

  Args:
    config: the model's config.
    classifiers: {'pitch': params, 'family': params, 'metrics': {'<kind>_test_accuracy': ...}} (stages).
    real_audio: [N, length] real notes.
    fake_audio: [N, length] translations at the real notes' pitches.
    references: {row: audio [M, length]} to score the same way; None = none.

  Returns:
    {'metrics': {'<kind>_test_accuracy', 'fid_<kind>', 'inception_score_<kind>', 'inception_score_<kind>_real',
     'inception_score_<kind>_max'}, 'reference_rows': {row: {'fid_<kind>', 'inception_score_<kind>'}},
     'classified': {kind: [N] the class each classifier names for each translation}}.
  """
  references = references or {}
  result: dict[str, Any] = {}
  rows: dict[str, dict[str, float | None]] = {row: {} for row in references}
  classified = {}
  for kind in KINDS:
    real_probs, real_features = classify(config, kind, classifiers[kind], real_audio)
    fake_probs, fake_features = classify(config, kind, classifiers[kind], fake_audio)
    classified[kind] = np.argmax(fake_probs, axis=1)
    if 'metrics' in classifiers:
      result[f'{kind}_test_accuracy'] = classifiers['metrics'][f'{kind}_test_accuracy']
    result[f'fid_{kind}'] = metrics.frechet_distance(real_features, fake_features)
    result[f'inception_score_{kind}'] = metrics.inception_score(fake_probs)
    result[f'inception_score_{kind}_real'] = metrics.inception_score(real_probs)
    result[f'inception_score_{kind}_max'] = real_probs.shape[1]
    for row, audio in references.items():
      probs, features = classify(config, kind, classifiers[kind], audio)
      rows[row][f'fid_{kind}'] = metrics.json_float(metrics.frechet_distance(real_features, features))
      rows[row][f'inception_score_{kind}'] = metrics.json_float(metrics.inception_score(probs))
  return {'metrics': result, 'reference_rows': rows, 'classified': classified}
