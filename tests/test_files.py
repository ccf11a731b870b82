"""File helpers: atomic text and JSON writes, the writable-directory check."""

import json
import os
import re

import pytest

from face2music_jax import files


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
