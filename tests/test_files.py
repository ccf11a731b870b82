"""File helpers: atomic text and JSON writes, one clear error for a failed write (a full disk), checksummed JSON,
setting a corrupt file aside, the writable-directory check."""

import json
import os
import contextlib
import re
import resource

import numpy as np
import pytest

from face2music_jax import files
from face2music_jax import train
from face2music_jax.audio import wav


@contextlib.contextmanager
def _files_limited_to(size: int):
  """No file of this process may grow beyond `size` bytes: writes fail with EFBIG, as they would with ENOSPC on a
  full disk (Python ignores SIGXFSZ)."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_write_text_and_json_replace_the_file_whole_and_leave_no_temporary(tmp_path):
  path = str(tmp_path / 'new_dir' / 'stats.json')
  files.write_json(path, {'mu_x': 1.5})
  files.write_json(path, {'mu_x': 2.5, 'sigma_x': 0.5})
  assert json.load(open(path)) == {'mu_x': 2.5, 'sigma_x': 0.5}
  files.write_text(path, 'plain\n')
  assert open(path).read() == 'plain\n'
  assert os.listdir(tmp_path / 'new_dir') == ['stats.json']


def test_check_writable_names_a_directory_below_a_file_and_creates_nothing(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(PermissionError, match=f'The output directory {re.escape(str(blocker / "out"))} is not writable'):
    files.check_writable(str(blocker / 'out'), 'output directory')
  files.check_writable(str(tmp_path / 'new' / 'deeper'), 'work directory')
  assert not (tmp_path / 'new').exists()


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_the_old_one(tmp_path):
  clip = np.zeros(16000, np.float32)
  path = str(tmp_path / 'samples' / 'face_00_midi60.wav')
  wav.write_wav(path, clip, 16000)
  before = open(path, 'rb').read()
  with _files_limited_to(1000):
    with pytest.raises(files.WriteError, match=f'Could not write {re.escape(path)} \\(is the disk full'):
      wav.write_wav(path, clip + 0.5, 16000)
    with pytest.raises(files.WriteError, match='face_01_midi60.wav .*File too large'):
      train.write_sample_wavs(str(tmp_path / 'samples'), clip[None], ['face_01_midi60'], 16000)
    with pytest.raises(files.WriteError, match='stats.json'):
      files.write_json(str(tmp_path / 'stats.json'), {'mu_x': list(range(1000))})
  assert open(path, 'rb').read() == before
  assert sorted(os.listdir(tmp_path / 'samples')) == ['face_00_midi60.wav']  # No temporary file left.


def test_a_checksummed_json_that_changed_is_named_and_can_be_set_aside(tmp_path):
  path = str(tmp_path / 'statistics.json')
  files.write_json(path, {'mu_x': 1.5, 'sigma_x': 0.5}, checksum=True)
  assert files.read_json(path) == {'mu_x': 1.5, 'sigma_x': 0.5}
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text.replace('1.5', '1.25'))
  with pytest.raises(files.CorruptFileError, match=f'{path} does not match its checksum'):
    files.read_json(path)
  with open(path, 'w') as f:
    f.write(text[:10])
  with pytest.raises(files.CorruptFileError, match=f'{path} is not valid JSON'):
    files.read_json(path)
  assert files.set_aside(path, 'checksum') == f'{path}.corrupt-checksum'
  open(path, 'w').close()
  assert files.set_aside(path, 'checksum') == f'{path}.corrupt-checksum-2'
  assert sorted(os.listdir(tmp_path)) == ['statistics.json.corrupt-checksum', 'statistics.json.corrupt-checksum-2']
