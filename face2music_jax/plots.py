"""Evaluation figures: tSNE of the audio metric space and of the face space (the paper's Figure 2), and faces
grouped by the family assigned to their translations (its Figure 3). PNG files, drawn with matplotlib's Agg
backend (no display needed)."""

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from sklearn import manifold  # pylint: disable=g-import-not-at-top

AUDIO_TSNE = 'tsne_audio.png'
FACE_TSNE = 'tsne_faces.png'
FACE_GRID = 'faces_by_family.png'

# tab10, then tab20's light shades, without reds: red marks the translations.
_FAMILY_COLOURS = ([plt.get_cmap('tab10')(i) for i in range(10) if i != 3] +
                   [plt.get_cmap('tab20')(i) for i in range(1, 20, 2) if i != 7])
_DPI = 120
_MAX_EXACT_TSNE = 1000  # Exact tSNE costs O(N^2) memory and time per iteration.


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
  """2-D tSNE embedding of rows x [N, D] -> [N, 2] (sklearn; perplexity capped for small N, which needs N > 3)."""
  n = len(x)
  if n < 4:
    raise ValueError(f'tSNE needs at least 4 points, got {n}.')
  perplexity = min(30.0, (n - 1) / 3)
  # Measured on 2 busy cores: exact tSNE took 0.2 s for 32 points and 15 s for 800, Barnes-Hut 13 s and 43 s.
  method = 'exact' if n <= _MAX_EXACT_TSNE else 'barnes_hut'
  return manifold.TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed,
                       method=method).fit_transform(np.asarray(x, np.float64))


def _colour(label: int) -> tuple[float, ...]:
  return _FAMILY_COLOURS[label % len(_FAMILY_COLOURS)]


def audio_tsne(real_phi: np.ndarray, real_family: np.ndarray, fake_phi: np.ndarray, families: tuple[str, ...],
               path: str, seed: int) -> None:
  """tSNE of the audio metric space: real notes coloured by family, translations as red dots.

  Args:
    real_phi: [N, P] phi(y) of real notes.
    real_family: [N] int family indices into `families`.
    fake_phi: [M, P] phi(y) of the translations.
    families: family names.
    path: the PNG to write.
    seed: seeds tSNE.
  """
  points = tsne(np.concatenate([real_phi, fake_phi]), seed)
  real, fake = points[:len(real_phi)], points[len(real_phi):]
  fig, ax = plt.subplots(figsize=(7, 6))
  for label in np.unique(real_family):
    mask = real_family == label
    ax.scatter(real[mask, 0], real[mask, 1], s=14, color=_colour(label), label=families[label])
  ax.scatter(fake[:, 0], fake[:, 1], s=14, color='red', edgecolors='black', linewidths=0.3, label='translations')
  _finish(fig, ax, 'Audio metric space phi(y) (tSNE)', path)


def face_tsne(embeddings: np.ndarray, assigned: np.ndarray, families: tuple[str, ...], path: str, seed: int) -> None:
  """tSNE of the face space, each face coloured by the family assigned to its translation.

  Args:
    embeddings: [N, E] face embeddings f(x).
    assigned: [N] int family indices into `families`.
    families: family names.
    path: the PNG to write.
    seed: seeds tSNE.
  """
  points = tsne(embeddings, seed)
  fig, ax = plt.subplots(figsize=(7, 6))
  for label in np.unique(assigned):
    mask = assigned == label
    ax.scatter(points[mask, 0], points[mask, 1], s=14, color=_colour(label), label=families[label])
  _finish(fig, ax, 'Face space f(x) (tSNE), coloured by assigned family', path)


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, path: str) -> None:
  ax.set_title(title)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
  fig.savefig(path, dpi=_DPI, bbox_inches='tight')
  plt.close(fig)


def face_grid(images: np.ndarray, assigned: np.ndarray, families: tuple[str, ...], path: str,
              faces_per_family: int) -> None:
  """Faces grouped by assigned family: one row per family that was assigned a face, up to `faces_per_family` faces.

  Args:
    images: [N, S, S, 3] float32 faces in [0, 1].
    assigned: [N] int family indices into `families`.
    families: family names.
    path: the PNG to write.
    faces_per_family: faces shown per row.
  """
  labels = np.unique(assigned)
  columns = min(faces_per_family, max(int(np.sum(assigned == label)) for label in labels))
  fig, axes = plt.subplots(len(labels), columns, figsize=(1.1 * columns + 1.2, 1.2 * len(labels)), squeeze=False)
  for row, label in enumerate(labels):
    members = np.flatnonzero(assigned == label)
    for col in range(columns):
      ax = axes[row, col]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if col < len(members):
        ax.imshow(np.clip(images[members[col]], 0, 1))
    axes[row, 0].set_ylabel(f'{families[label]}\n({len(members)})', rotation=0, ha='right', va='center', fontsize=9)
  fig.suptitle('Faces grouped by the family of their translation')
  fig.savefig(path, dpi=_DPI, bbox_inches='tight')
  plt.close(fig)
