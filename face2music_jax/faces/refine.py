"""Refines the face network on face TFRecords with a triplet loss on identities, as the paper refines its VGGFace2
network (`faces/network.py: refine_face_network`), from the command line:

  python -m face2music_jax.faces.convert refine --weights=vggface2.npz \
      --records='/data/vggface2_tfr/train-*.tfrecord' --output=vggface2_refined.npz --steps=2000 \
      [--max_images=20000] [--assume_cropped] [--skip_no_face] [--batch_size=32 --lr=1e-4 --margin=0.2 ...]

The faces are read from the records (format in `faces/records.py`; identities by name, so records of several splits
may be mixed), found and aligned as `faces/embedding.py: FaceNetworkEmbedder` aligns them for embedding (dlib's
detector, or the whole image with --assume_cropped, and 160x160 chips by the 5 landmarks), so that the network is
refined on faces framed as it will embed them. Every chip is held in memory: --max_images bounds how many are read
(the converter shuffles records before sharding, so the first ones mix identities). The refined weights are
written with `save_face_weights` under their final name only when complete; then embed with
`--config.data.face_embedding=network --config.data.face_weights=<output>`.
"""

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from face2music_jax.faces import embedding as face_embedding
from face2music_jax.faces import network as face_network
from face2music_jax.faces import records as face_records

DEFAULTS = {
    'batch_size': 32,
    'lr': 1e-4,
    'margin': 0.2,
    'seed': 0,
    'mining': 'batch_hard',
    'views_per_identity': 4,
    'dropout_rate': 0.6,
    'log_every': 50
}


def read_face_chips(records: str | Sequence[str], aligner: face_embedding.FaceAligner, *, max_images: int = 0,
                    skip_no_face: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """The aligned faces of face TFRecords and their identities, in file order.

  Args:
    records: a glob or a list of face TFRecords.
    aligner: finds and aligns the faces.
    max_images: read at most this many records (0: all).
    skip_no_face: drop (with a count) records in which the detector finds no face, instead of raising.

  Returns:
    (chips uint8 [N, S, S, 3], identities int32 [N]: indices into the names, the identity names, sorted).

  Raises:
    face_records.FaceDataError: the records are missing or corrupt.
    face_embedding.NoFaceError: naming the record of an image without a face (unless `skip_no_face`).
  """
  chips, names, dropped, start = [], [], 0, time.time()
  for path in face_records.resolve_files(records):
    if max_images and len(chips) + dropped >= max_images:
      break
    for example in face_records.read_records(path):
      if max_images and len(chips) + dropped >= max_images:
        break
      feature = example.features.feature
      image = tf.io.decode_jpeg(feature[face_records.IMAGE_KEY].bytes_list.value[0], channels=3).numpy()
      try:
        chips.append(aligner.face_chips(image[None])[0])
      except face_embedding.NoFaceError as e:
        filename = feature[face_records.FILENAME_KEY].bytes_list.value[0].decode()
        if not skip_no_face:
          raise face_embedding.NoFaceError(f'{path}: {filename}: {e}', e.index) from e
        logging.warning('No face found in %s: %s: skipped.', path, filename)
        dropped += 1
        continue
      names.append(feature[face_records.NAME_KEY].bytes_list.value[0].decode())
    logging.info('%s: %d faces aligned so far (%.1f faces/s).', path, len(chips),
                 len(chips) / max(time.time() - start, 1e-9))
  if dropped:
    logging.warning('Dropped %d of %d records without a detected face.', dropped, len(chips) + dropped)
  if not chips:
    raise face_records.FaceDataError(f'No faces read from the face TFRecords {records}.')
  identities = sorted(set(names))
  index = {name: i for i, name in enumerate(identities)}
  return np.stack(chips), np.array([index[n] for n in names], np.int32), identities


def refine_file(weights: str, records: str | Sequence[str], output: str, *, steps: int, assume_cropped: bool = False,
                skip_no_face: bool = False, max_images: int = 0, **kwargs) -> dict:
  """Reads a weights file, refines the network on the faces of face TFRecords, writes the refined weights.

  Args:
    weights: the starting weights file (format in `faces/network.py`).
    records: a glob or a list of face TFRecords.
    output: the weights file to write (may be `weights`; written under its name only when complete).
    steps: optimiser steps.
    assume_cropped: the images are tight face crops: align the whole image instead of detecting the face.
    skip_no_face: drop records in which the detector finds no face instead of raising.
    max_images: read at most this many records (0: all).
    **kwargs: the other arguments of `refine_face_network` (batch_size, lr, margin, seed, mining,
      views_per_identity, dropout_rate, log_every); DEFAULTS otherwise.

  Returns:
    The refined variables {'params', 'batch_stats'}.
  """
  variables = face_network.load_face_weights(weights)
  aligner = face_embedding.FaceAligner(assume_cropped, face_embedding.NETWORK_CHIP_SIZE)
  chips, identities, names = read_face_chips(records, aligner, max_images=max_images, skip_no_face=skip_no_face)
  logging.info('Refining %s on %d faces of %d identities for %d steps.', weights, len(chips), len(names), steps)
  refined = face_network.refine_face_network(variables, chips, identities, steps=steps,
                                             image_size=face_embedding.NETWORK_CHIP_SIZE, **{
                                                 **DEFAULTS,
                                                 **kwargs
                                             })
  incomplete = f'{output}.incomplete'
  face_network.save_face_weights(incomplete, refined)
  os.replace(incomplete, output)
  logging.info('Wrote the refined face network to %s.', output)
  return refined


def add_parser(commands: argparse._SubParsersAction) -> None:
  """The `refine` subcommand of `python -m face2music_jax.faces.convert`."""
  refine = commands.add_parser('refine', help='Refine a face network on face TFRecords (triplet loss on identities).')
  refine.add_argument('--weights', required=True, help='The starting weights (.npz, e.g. converted VGGFace2).')
  refine.add_argument('--records', required=True, help="Glob of face TFRecords, e.g. '/data/faces/train-*.tfrecord'.")
  refine.add_argument('--output', required=True, help='The refined weights file to write (.npz).')
  refine.add_argument('--steps', type=int, required=True, help='Optimiser steps.')
  refine.add_argument('--max_images', type=int, default=0, help='Read at most this many records (0: all); every '
                      'face is held in memory.')
  refine.add_argument('--assume_cropped', action='store_true',
                      help='The images are tight face crops (such as the default faces): skip face detection.')
  refine.add_argument('--skip_no_face', action='store_true',
                      help='Drop (and count) images without a detected face instead of failing.')
  refine.add_argument('--batch_size', type=int, default=DEFAULTS['batch_size'], help='Faces per step.')
  refine.add_argument('--views_per_identity', type=int, default=DEFAULTS['views_per_identity'],
                      help='Faces of each identity in a batch.')
  refine.add_argument('--lr', type=float, default=DEFAULTS['lr'], help='Adam learning rate.')
  refine.add_argument('--margin', type=float, default=DEFAULTS['margin'],
                      help='Triplet margin, in embedding distance (unit-norm embeddings).')
  refine.add_argument('--mining', choices=('batch_hard', 'semi_hard'), default=DEFAULTS['mining'])
  refine.add_argument('--dropout_rate', type=float, default=DEFAULTS['dropout_rate'],
                      help='Dropout before the last linear layer (facenet-pytorch: 0.6).')
  refine.add_argument('--seed', type=int, default=DEFAULTS['seed'], help='Seeds batches, flips and dropout.')
  refine.add_argument('--log_every', type=int, default=DEFAULTS['log_every'], help='Steps between loss logs.')


def run(args: argparse.Namespace) -> None:
  """Runs the `refine` subcommand, logging its progress to stderr."""
  logging.set_verbosity(logging.INFO)
  refine_file(args.weights, args.records, args.output, steps=args.steps, assume_cropped=args.assume_cropped,
              skip_no_face=args.skip_no_face, max_images=args.max_images, batch_size=args.batch_size,
              views_per_identity=args.views_per_identity, lr=args.lr, margin=args.margin, mining=args.mining,
              dropout_rate=args.dropout_rate, seed=args.seed, log_every=args.log_every)
