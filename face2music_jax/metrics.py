"""The paper's Table 1 measures, as pure functions of features, probabilities and embeddings (numpy / scipy).

FID and the Inception Score take a frozen classifier's penultimate features and softmax outputs; the Pearson
correlation of pairwise distances and the silhouette value take face embeddings and the audio metric phi(y) of
their translations. `evaluate.py` computes them on a trained model; benchmarks and the device check reuse them.
"""

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import linalg
from scipy import stats
from scipy.spatial import distance
from sklearn import metrics as sk_metrics


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
  return float(np.sum((mu_a - mu_b)**2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray) -> float:
  """Inception Score exp(E_x KL(p(c|x) || p(c))) of class probabilities: 1 (uninformative) to the class count.

  Args:
    probs: [N, C] softmax outputs of a classifier, rows summing to 1.
  """
  probs = np.asarray(probs, np.float64)
  marginal = probs.mean(0, keepdims=True)
  return float(np.exp(np.mean(stats.entropy(probs, np.broadcast_to(marginal, probs.shape), axis=1))))


def distance_correlation(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float]:
  """Pearson correlation between the pairwise L2 distances within x and within y (same rows, other spaces).

  Args:
    x: [N, Dx], e.g. face embeddings f(x_i).
    y: [N, Dy], e.g. the audio metric phi(y_i) of their translations.
    groups: optional [N] labels (e.g. the face each row translates); pairs of rows with equal labels are left
      out. A face translated twice (at two pitches) is at distance 0 from itself in x but not in y: such pairs
      measure the pitch, not the face.

  Returns:
    (r, p-value) over the pairs kept (N (N - 1) / 2 without groups); NaN when the distances in one space are all
    equal.
  """
  if len(x) != len(y) or len(x) < 3:
    raise ValueError(f'Need two sets of equally many (>= 3) rows, got {len(x)} and {len(y)}.')
  dx, dy = distance.pdist(np.asarray(x, np.float64)), distance.pdist(np.asarray(y, np.float64))
  if groups is not None:
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    keep = distance.pdist(codes.reshape(-1, 1).astype(np.float64), 'hamming') > 0
    dx, dy = dx[keep], dy[keep]
    if len(dx) < 3:
      raise ValueError(f'Need >= 3 pairs of rows from different groups, got {len(dx)}.')
  if np.ptp(dx) == 0 or np.ptp(dy) == 0:
    return float('nan'), float('nan')
  result = stats.pearsonr(dx, dy)
  return float(result.statistic), float(result.pvalue)


def distance_correlation_interval(x: np.ndarray, ys: Sequence[np.ndarray], level: float = 0.95,
                                  num_resamples: int = 300, seed: int = 0) -> tuple[float, float] | None:
  """A bootstrap interval of the mean over `ys` of `distance_correlation(x, y)`: how much the figure owes to the draw
  of rows (e.g. which faces a photo set holds).

  Each resample draws N rows with replacement, the same rows for every y; a row drawn twice makes no pair with
  itself; resamples with fewer than 3 distinct rows, or distances all equal, are left out.

  Args:
    x: [N, Dx], e.g. independent face descriptors.
    ys: [N, Dy] arrays, e.g. the MFCC means of the faces' notes at each pitch.
    level: the interval's coverage.
    num_resamples: resamples drawn.
    seed: the resampling's seed (the interval is a function of the data and the seed).

  Returns:
    (low, high) percentiles of the resampled means; None with fewer than 5 rows or fewer than half the resamples
    usable.
  """
  n = len(x)
  if n < 5:
    return None
  rng = np.random.default_rng(seed)
  means = []
  for _ in range(num_resamples):
    rows = rng.integers(0, n, n)
    if len(np.unique(rows)) < 3:
      continue
    rs = [distance_correlation(x[rows], y[rows], groups=rows)[0] for y in ys]
    if np.all(np.isfinite(rs)):
      means.append(np.mean(rs))
  if len(means) < num_resamples / 2:
    return None
  tail = 100 * (1 - level) / 2
  return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def family_distribution(labels: np.ndarray, families: Sequence[str]) -> dict[str, Any]:
  """How labels [N] (indices into `families`) spread: {'counts': {family: n}, 'largest_share', 'effective_number'}
  (exp of the entropy of the shares: 1 = all in one family, len(families) = evenly over all)."""
  labels = np.asarray(labels, np.int64)
  if not len(labels) or labels.min() < 0 or labels.max() >= len(families):
    raise ValueError(f'Expected labels in [0, {len(families)}) for {len(families)} families; got '
                     f'{np.unique(labels).tolist()}.')
  counts = np.bincount(labels, minlength=len(families))
  share = counts / counts.sum()
  nonzero = share[share > 0]
  return {
      'counts': {
          f: int(c) for f, c in zip(families, counts)
      },
      'largest_share': float(share.max()),
      'effective_number': float(np.exp(-np.sum(nonzero * np.log(nonzero)))),
  }


def family_distribution_interval(labels: np.ndarray, groups: np.ndarray, families: Sequence[str], level: float = 0.95,
                                 num_resamples: int = 300, seed: int = 0) -> dict[str, tuple[float, float]] | None:
  """Bootstrap intervals of `family_distribution`'s 'effective_number' and 'largest_share': how much they owe to
  the draw of groups (e.g. which faces a photo set holds, each with its notes at every listening pitch).

  Each resample draws as many groups as there are, with replacement, and takes every label of each group drawn.

  Args:
    labels: [N] indices into `families`.
    groups: [N] the group of each label (e.g. its face).
    families: the family names.
    level: the intervals' coverage.
    num_resamples: resamples drawn.
    seed: the resampling's seed (the intervals are a function of the data and the seed).

  Returns:
    {'effective_number': (low, high), 'largest_share': (low, high)}, percentiles of the resampled values; None with
    fewer than 5 groups.
  """
  labels, groups = np.asarray(labels, np.int64), np.asarray(groups)
  names, members = np.unique(groups, return_inverse=True)
  if len(names) < 5:
    return None
  counts = np.zeros((len(names), len(families)))  # [groups, families]: each group's labels.
  np.add.at(counts, (members, labels), 1)
  draws = np.random.default_rng(seed).integers(0, len(names), (num_resamples, len(names)))
  totals = np.stack([counts[d].sum(axis=0) for d in draws])  # [resamples, families]
  shares = totals / totals.sum(axis=1, keepdims=True)
  entropy = -np.sum(np.where(shares > 0, shares * np.log(np.where(shares > 0, shares, 1.0)), 0.0), axis=1)
  tail = 100 * (1 - level) / 2
  interval = lambda x: (float(np.percentile(x, tail)), float(np.percentile(x, 100 - tail)))
  return {'effective_number': interval(np.exp(entropy)), 'largest_share': interval(shares.max(axis=1))}


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


def welch_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float] | None:
  """The difference of means mean(a) - mean(b) with its Welch t confidence interval (unequal variances).

  Args:
    a: values of one group (e.g. a measure over seeds).
    b: values of the other.
    confidence: of the two-sided interval.

  Returns:
    (difference, low, high), or None when either group has fewer than 2 values. With both variances 0 the
    interval is the difference itself.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    return None
  difference = float(a.mean() - b.mean())
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = np.sqrt(va + vb)
  if se == 0:
    return difference, difference, difference
  df = (va + vb)**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
  return difference, difference - half, difference + half


def json_float(value: float | None) -> float | None:
  """JSON has no NaN: an undefined value (None, NaN, Inf) is written as null."""
  return None if value is None or not np.isfinite(value) else float(value)
