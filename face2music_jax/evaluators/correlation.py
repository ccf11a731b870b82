"""Correlation: do faces that look alike sound alike? Pearson of face and audio distances, and the silhouette.

- `pearson_correlation`: Pearson of pairwise face distances ||f_i - f_j|| and audio metric distances
  ||phi(y_i) - phi(y_j)|| of the translations, at one listening pitch at a time over the held-out faces, averaged
  over the pitches (a pitch drawn per face would add audio distance that the faces cannot explain);
- `pearson_mfcc`: the same with the translations' distances in librosa's MFCC means (n_mfcc 20) instead of phi, over
  pairs of different identities only: the photo evaluation's `pearson_independent` (its faces are different people)
  where the face embedding is dlib's, so held-out faces and photos compare on one ruler (phi's conv half, trained with
  the model, is not in it; views of one person, near in both spaces, would raise it);
- `pearson_correlation_random_pitch` (and its p-value): the same over translations at drawn pitches, pairs of one
  face with itself left out;
- `silhouette_value`: of the faces in face space, each labelled with the family whose real-note centroid in phi
  space is nearest to its translation (`assigned`).
"""

from typing import Any

import numpy as np

from face2music_jax import metrics


def pearson_per_pitch(embeddings: np.ndarray, phi: np.ndarray, midi: np.ndarray,
                      identity: np.ndarray | None = None) -> dict[int, float | None]:
  """{MIDI pitch: Pearson of pairwise face vs audio distances (phi, or any audio features) of the translations at that
  pitch}, over pairs of different `identity` only where it is given (None where undefined: fewer than 3 pairs, or all
  distances in one space equal)."""
  out = {}
  for p in np.unique(midi):
    at = midi == p
    groups = None if identity is None else np.asarray(identity)[at]
    pairs = np.count_nonzero(at) * (np.count_nonzero(at) - 1) // 2
    if groups is not None:
      pairs -= sum(c * (c - 1) // 2 for c in np.unique(groups, return_counts=True)[1])
    if pairs < 3:
      out[int(p)] = None
      continue
    out[int(p)] = metrics.json_float(metrics.distance_correlation(embeddings[at], phi[at], groups)[0])
  return out


def evaluate(*, listened_faces: np.ndarray, listened_phi: np.ndarray, listened_mfcc: np.ndarray,
             listened_midi: np.ndarray, listened_identity: np.ndarray, z: np.ndarray, fake_phi: np.ndarray,
             face_index: np.ndarray, real_phi: np.ndarray, real_family: np.ndarray,
             num_families: int) -> dict[str, Any]:
  """The correlation measures (module docstring).

  Args:
    listened_faces: [L, E] the face embedding of each translation of the listening measures.
    listened_phi: [L, F] phi of those translations.
    listened_mfcc: [L, C] their MFCC means (librosa, `audio.listening.mfcc_means`).
    listened_identity: [L] whose face each is (`pearson_mfcc` pairs different identities only).
    listened_midi: [L] their MIDI pitches.
    z: [N, E] the face embeddings of the translations at drawn pitches.
    fake_phi: [N, F] phi of those translations.
    face_index: [N] which face each is (pairs of one face with itself are left out).
    real_phi: [M, F] phi of real notes; real_family: [M] their families.
    num_families: the number of families.

  Returns:
    {'metrics': {'pearson_correlation', 'pearson_mfcc', 'pearson_correlation_random_pitch',
     'pearson_random_pitch_p_value', 'silhouette_value'}, 'pearson_per_pitch': {midi: r},
     'pearson_mfcc_per_pitch': {midi: r}, 'assigned': [N] family of each translation,
     'family_counts': [num_families], 'notes': [why a measure is undefined]}.
  """
  per_pitch = pearson_per_pitch(listened_faces, listened_phi, listened_midi)
  finite = [r for r in per_pitch.values() if r is not None]
  result: dict[str, Any] = {'pearson_correlation': float(np.mean(finite)) if finite else None}
  mfcc_per_pitch = pearson_per_pitch(listened_faces, listened_mfcc, listened_midi, listened_identity)
  finite_mfcc = [r for r in mfcc_per_pitch.values() if r is not None]
  result['pearson_mfcc'] = float(np.mean(finite_mfcc)) if finite_mfcc else None
  r, p_value = metrics.distance_correlation(z, fake_phi, groups=face_index)
  result['pearson_correlation_random_pitch'], result['pearson_random_pitch_p_value'] = r, p_value
  notes = []
  if not finite:
    notes.append('pearson_correlation is undefined: at every listening pitch, all pairwise distances in one space '
                 'are equal.')
  assigned = metrics.nearest_centroid_labels(fake_phi, real_phi, real_family)
  result['silhouette_value'] = metrics.silhouette_value(z, assigned)
  counts = np.bincount(assigned, minlength=num_families)
  if result['silhouette_value'] is None:
    used = np.count_nonzero(counts)
    notes.append(f'silhouette_value is undefined: the translations were assigned to {used} '
                 f'famil{"y" if used == 1 else "ies"}; it needs 2 to N - 1.')
  return {
      'metrics': result,
      'pearson_per_pitch': per_pitch,
      'pearson_mfcc_per_pitch': mfcc_per_pitch,
      'assigned': assigned,
      'family_counts': counts,
      'notes': notes
  }
