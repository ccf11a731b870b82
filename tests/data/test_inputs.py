"""The one loader of the training input (data/inputs.py): each split read once, shared by configs of the same data,
and split over hosts by example (notes) and by file (faces)."""

import jax
import numpy as np
import pytest

from face2music_jax.data import faces as face_data
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.data import note_batches
from face2music_jax.faces.records import FaceDataError


def _counting(monkeypatch, module, name: str) -> list:
  calls, original = [], getattr(module, name)

  def counted(*args, **kwargs):
    calls.append(args)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, name, counted)
  return calls


def test_each_split_is_read_once_and_shared_by_configs_of_the_same_data(tiny_config, monkeypatch):
  note_reads = _counting(monkeypatch, note_batches, 'load_notes')
  face_reads = _counting(monkeypatch, face_data, 'load_faces')
  inputs = inputs_lib.Inputs(tiny_config)
  assert inputs.notes('train') is inputs.notes('train') and len(note_reads) == 1
  faces = inputs.faces('train')
  assert inputs.faces('train', process_index=0, process_count=1) is faces and len(face_reads) == 1
  assert faces['embedding'].shape == (len(faces['name']), tiny_config.data.embedding_dim) and 'image' not in faces
  assert len(inputs.faces('train', max_examples=3)['name']) == 3 and len(face_reads) == 2

  other_run = tiny_config.copy_and_resolve_references()
  other_run.seed += 1
  other_run.train.use_aux_discriminator = False
  assert inputs_lib.for_config(other_run, inputs) is inputs
  other_data = tiny_config.copy_and_resolve_references()
  other_data.audio.length //= 2
  assert inputs_lib.for_config(other_data, inputs) is not inputs
  tiny_config.audio.length //= 2  # A later change to the config does not reach the loader made from it.
  assert not inputs.serves(tiny_config) and inputs.notes('train')['audio'].shape[1] == other_run.audio.length


def test_hosts_train_on_disjoint_shares_that_make_up_the_data(tiny_config, monkeypatch):
  inputs = inputs_lib.Inputs(tiny_config)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  shares = []
  for index in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    shares.append(inputs_lib.TrainingData(tiny_config, inputs))
  notes, faces = inputs.notes('train'), inputs.faces('train')
  assert sorted(len(s.audio) for s in shares) == [len(notes['audio']) // 2, -(-len(notes['audio']) // 2)]
  np.testing.assert_array_equal(np.concatenate([s.audio for s in shares]),
                                np.concatenate([notes['audio'][0::2], notes['audio'][1::2]]))
  assert sum(len(s.faces) for s in shares) == len(faces['embedding'])
  rows = {tuple(e) for e in faces['embedding']}
  assert {tuple(e) for e in shares[0].faces} | {tuple(e) for e in shares[1].faces} == rows
  assert not {tuple(e) for e in shares[0].faces} & {tuple(e) for e in shares[1].faces}

  # More hosts than face files: an error naming them, not hosts silently training on the same faces.
  hosts = len(inputs.face_files('train')) + 1
  monkeypatch.setattr(jax, 'process_count', lambda: hosts)
  with pytest.raises(FaceDataError, match=f'face TFRecord files .* cannot be split over {hosts} hosts'):
    inputs_lib.TrainingData(tiny_config, inputs)
