"""The training input: the notes and faces that training, its prerequisite stages and evaluation read, through one
loader, and this process's share of them for the GAN's batches.

`Inputs(config)` reads each split once per instance: `train.train` makes one and hands it to the stages and to
`TrainingData`; `evaluate.evaluate` makes its own (or reuses one handed to it: the experiment runner shares one
between its cells); `for_config` is that choice. An `Inputs` serves every config whose data fields
(`DATA_FIELDS`) equal those of the config it was made from; runs that differ only in seed, model or losses share
it. It reads only what is built: `stages.ensure_data` is the one door that builds the embedded datasets.

Training holds its input in memory, so that every batch is a pure function of (seed, step, process) and a resumed
run draws exactly the batches an uninterrupted run would have. This fits real data: the notes are held cropped
(`config.audio.length` samples each, 8x less than NSynth's 4 s notes) and the faces as their precomputed
embeddings only, parsed without decoding a JPEG (VGGFace2's 3.3M faces at 512-d are 6.6 GB), and each host holds
its share (notes split by example, face files by `faces.host_files`). So there is no streaming (tf.data) reader
for training.
"""

import jax
import ml_collections
import numpy as np
from absl import logging

from face2music_jax import parallel
from face2music_jax.data import exported
from face2music_jax.data.sampling import EpochSampler

# The config fields that define the data an `Inputs` reads (the notes, the faces and their embeddings).
DATA_FIELDS = ('data_dir', 'audio', 'data', 'notes')


class Inputs:
  """The notes and face records of one config's data, each split read once (per instance).

  Attributes:
    config: a copy of the config it was made from (later changes to that config do not reach it).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config.copy_and_resolve_references()
    self._notes: dict[str, dict[str, np.ndarray]] = {}
    self._face_files: dict[str, list[str]] = {}
    self._faces: dict[tuple[tuple[str, ...], int | None], dict[str, np.ndarray]] = {}

  def serves(self, config: ml_collections.ConfigDict) -> bool:
    """Whether `config` defines the same data (`DATA_FIELDS`) as this instance's config."""
    return not config.data.exported and all(config[field] == self.config[field] for field in DATA_FIELDS)

  def notes(self, split: str) -> dict[str, np.ndarray]:
    """All notes of a split, cropped and filtered as the models see them (`audio.load_notes`): audio [N, length]
    float32; pitch, family, velocity, instrument [N] int32."""
    if split not in self._notes:
      # pylint: disable-next=import-outside-toplevel  (TFDS and TensorFlow: not needed for an exported data file)
      from face2music_jax.data import note_batches
      self._notes[split] = note_batches.load_notes(self.config, split)
    return self._notes[split]

  def face_files(self, split: str) -> list[str]:
    """The face TFRecords of a split (`faces.face_files`)."""
    if split not in self._face_files:
      from face2music_jax.data import faces as face_data  # pylint: disable=import-outside-toplevel  (TensorFlow)
      self._face_files[split] = face_data.face_files(self.config, split)
    return self._face_files[split]

  def faces(self, split: str, *, process_index: int = 0, process_count: int = 1,
            max_examples: int | None = None) -> dict[str, np.ndarray]:
    """The face records of a split without images, in file order: 'embedding' [N, embedding_dim] float32,
    'identity' int32 [N], 'name' and 'filename' str [N].

    Args:
      split: 'train' or 'test'.
      process_index: with `process_count`, read this host's share of the files only (`faces.host_files`).
      process_count: the number of hosts sharing the files.
      max_examples: read only the first ones.

    Raises:
      face_records.FaceDataError: naming the file or pattern (missing, corrupt, too few files for the hosts).
    """
    from face2music_jax.data import faces as face_data  # pylint: disable=import-outside-toplevel  (TensorFlow)
    files = tuple(face_data.host_files(self.face_files(split), process_index, process_count))
    key = (files, max_examples)
    if key not in self._faces:
      self._faces[key] = face_data.load_faces(files, None, embedding_dim=self.config.data.embedding_dim,
                                              max_examples=max_examples)
    return self._faces[key]

  def faces_with_images(self, split: str) -> dict[str, np.ndarray]:
    """`faces` of a whole split, with 'image' float32 [N, S, S, 3] in [0, 1] (S = config.data.face_image_size),
    decoded on every call (evaluation's figures and page)."""
    from face2music_jax.data import faces as face_data  # pylint: disable=import-outside-toplevel  (TensorFlow)
    return face_data.load_faces(self.face_files(split), self.config.data.face_image_size,
                                embedding_dim=self.config.data.embedding_dim)


def for_config(config: ml_collections.ConfigDict, inputs: Inputs | None = None) -> Inputs:
  """`inputs` if it serves `config` (`Inputs.serves`), else a new `Inputs` of `config`: of its exported data file
  (`exported.ExportedInputs`) if `config.data.exported` is set."""
  if inputs is not None and inputs.serves(config):
    return inputs
  return exported.ExportedInputs(config) if config.data.exported else Inputs(config)


class TrainingData:
  """This process's share of the training data in memory; batches are a pure function of the step.

  Notes are split between hosts by example, face files by `faces.host_files` (hosts never share a face file: a
  run on more hosts than face files fails at the start, naming them).
  """

  def __init__(self, config: ml_collections.ConfigDict, inputs: Inputs | None = None):
    """Loads this process's share.

    Args:
      config: the run's config.
      inputs: the loader of the run's data (`for_config`: a new one if it is None or serves other data).

    Raises:
      face_records.FaceDataError: fewer face files than processes, or the face files are missing or corrupt.
    """
    inputs = for_config(config, inputs)
    pidx, pcount = jax.process_index(), jax.process_count()
    self.faces = inputs.faces('train', process_index=pidx, process_count=pcount)['embedding']
    self.local_batch = parallel.local_batch_size(config.train.batch_size)
    self.d_steps = config.train.d_steps
    notes = inputs.notes('train')
    self.audio = notes['audio'][pidx::pcount]
    self.pitch = notes['pitch'][pidx::pcount].astype(np.int32)
    self.face_sampler = EpochSampler(len(self.faces), self.local_batch, config.seed, pidx)
    self.note_sampler = EpochSampler(len(self.audio), self.local_batch, config.seed + 1, pidx)
    logging.info('Process %d trains on %d faces and %d notes.', pidx, len(self.faces), len(self.audio))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The local batch of `step`: config.train.d_steps sub-batches [D, local_batch, ...], each freshly drawn."""
    subs = [step * self.d_steps + k for k in range(self.d_steps)]
    f = np.stack([self.face_sampler.indices(s) for s in subs])
    n = np.stack([self.note_sampler.indices(s) for s in subs])
    return {'embedding': self.faces[f], 'audio': self.audio[n], 'pitch': self.pitch[n]}
