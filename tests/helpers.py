"""Synthetic inputs for fast tests of the models and the train step (no dataset needed), and work directories that
start with the stage artefacts of a run, so that tests of training skip the stages; faces files of given embeddings."""

import os
import shutil

import ml_collections
import numpy as np

from face2music_jax.configs import aux
from face2music_jax import synthetic
from face2music_jax.evaluators import photos


def tiny_config(name: str = 'aux') -> ml_collections.ConfigDict:
  config = aux.get_config('tiny')
  config.name = name
  config.train.use_metric_loss = name in ('metric', 'aux')
  config.train.use_aux_discriminator = name == 'aux'
  return config


synthetic_batch = synthetic.batch
random_metric = synthetic.audio_metric

# What a machine with only JAX lacks (as the accelerator machines lent to some sessions).
WITHOUT_TENSORFLOW = ('tensorflow', 'tensorflow_datasets', 'dlib', 'pretty_midi')  # pretty_midi: translation's.
# Python source that, run first in a process, makes importing any of them fail as if it were not installed.
BLOCK_TENSORFLOW = f'import sys\nfor m in {WITHOUT_TENSORFLOW!r}: sys.modules[m] = None\n'


def xla_flags(*flags: str) -> str:
  """XLA_FLAGS for a subprocess: this process's (conftest.py's compile settings) and `flags`."""
  return ' '.join([os.environ.get('XLA_FLAGS', ''), *flags]).strip()


def eval_summary(value: float, step: int = 8, pitches: tuple[int, ...] = (36, 60)) -> dict:
  """An evaluation summary (eval/metrics.json, `evaluate.evaluate`'s keys) with what the tables read: every measure
  is `value` (or a fixed multiple of it), so a test knows each column's mean and sd."""

  def listened(in_tune: float) -> dict:
    return {
        'num_clips': 4 * len(pitches),
        'in_tune_50c': in_tune,
        'flatness': {
            'median': 1e-6 * value,
            'p10': 0.0,
            'p90': 1e-5
        },
        'rms': {
            'median': 0.01 * value,
            'p10': 0.0,
            'p90': 0.1
        },
        'per_pitch': {
            str(p): {
                'num_clips': 4,
                'in_tune_50c': in_tune * (1 - 0.5 * (i % 2))
            } for i, p in enumerate(pitches)
        },
        'distinctness': {
            'mean': 0.1 * value,
            'per_pitch': {
                str(p): 0.1 * value for p in pitches
            }
        },
    }

  classified = {'fid_pitch': 30.0, 'inception_score_pitch': 9.0, 'fid_family': 40.0, 'inception_score_family': 2.0}
  return {
      'checkpoint_step': step,
      'config_name': 'aux',
      'config_size': 'tiny',
      'num_translations': 16,
      'metrics': {
          'pitch_test_accuracy': 0.9,
          'fid_pitch': value,
          'inception_score_pitch': 2 * value,
          'inception_score_pitch_real': 12.5,
          'inception_score_pitch_max': 13,
          'family_test_accuracy': 0.8,
          'fid_family': 3 * value,
          'inception_score_family': 0.5 * value,
          'inception_score_family_real': 3.25,
          'inception_score_family_max': 4,
          'in_tune_50c': 0.1 * value,
          'flatness_median': 1e-6 * value,
          'distinctness': 0.1 * value,
          'pearson_correlation': 0.1 * value,
          'pearson_correlation_random_pitch': 0.05 * value,
          'silhouette_value': -0.01 * value,
      },
      'pearson_per_pitch': {
          str(p): 0.1 * value for p in pitches
      },
      'reference_rows': {
          'real_train_notes': classified,  # No listening row: the FID floor's.
          'real_test_notes': classified,
          'white_noise': classified
      },
      'listening': {
          'pitches': list(pitches),
          'num_faces': 4,
          'rows': {
              'translations': listened(0.1 * value),
              'real_test_notes': listened(1.0),
              'white_noise': listened(0.0)
          }
      },
  }


# What the prerequisite stages leave in a work directory (face2music_jax/stages.py); deterministic for a config.
STAGE_ARTEFACTS = ('audio_embedding', 'classifiers', 'statistics.json')


def copy_stage_artefacts(source: str, workdir: str) -> str:
  """Starts `workdir` with the stage artefacts of the run in `source` (of the same config and data), so that a test
  of training skips the stages; returns `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  for name in STAGE_ARTEFACTS:
    path = os.path.join(source, name)
    (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, os.path.join(workdir, name))
  return workdir


def write_faces_file(path: str, embedding: np.ndarray, embedder: str = 'dlib') -> str:
  """A faces file (as `face2music export_data --photos` writes) of the given embeddings."""
  n = len(embedding)
  faces = {
      'embedding': embedding,
      'independent': embedding,
      'photo': [f'p{i}.jpg' for i in range(n)],
      'box': [(0, 0, 9, 9)] * n,
      'crop': np.zeros((n, 96, 96, 3), np.uint8),
      'skipped': []
  }
  return photos.save_faces(path, faces, embedder, os.path.dirname(path))
