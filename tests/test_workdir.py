"""One command at a time per work directory (a lock), and one run per work directory (its identity)."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from face2music_jax import config_lib
from face2music_jax import files
from face2music_jax import train
from face2music_jax import workdir
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_command_gets_a_clear_error_naming_the_holder(tmp_path):
  path = str(tmp_path / 'workdir')
  with workdir.locked(path):
    with pytest.raises(workdir.WorkdirError, match=f'in use by process {os.getpid()} on '):
      with workdir.locked(path):
        pass
  with workdir.locked(path):  # Released when the first command ended.
    pass
  assert not os.path.exists(os.path.join(path, workdir.LOCK_FILE))


def test_training_into_a_locked_work_directory_fails_before_writing_anything(tmp_path):
  config = helpers.tiny_config()
  path = str(tmp_path / 'workdir')
  with workdir.locked(path):
    with pytest.raises(workdir.WorkdirError, match=f'in use by process {os.getpid()}'):
      train.train(config, path)
  assert os.listdir(path) == []


def test_a_stale_lock_of_a_killed_process_is_detected_and_cleared(tmp_path, caplog):
  path = str(tmp_path / 'workdir')
  code = ('import os, signal, sys; from face2music_jax import workdir\n'
          f'with workdir.locked({path!r}):\n'
          '  print(os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGKILL)\n')
  killed = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  pid = int(killed.stdout)
  with open(os.path.join(path, workdir.LOCK_FILE)) as f:
    assert json.load(f)['pid'] == pid  # Left behind.
  with workdir.locked(path):
    pass
  assert f'Cleared the stale lock of process {pid}' in caplog.text


def test_the_same_run_is_accepted_with_another_length_and_intervals(tmp_path):
  path = str(tmp_path)
  config = helpers.tiny_config()
  first = workdir.accept_run(config, path)
  assert first['verified_from'] == 0
  config.train.num_steps *= 3
  config.train.checkpoint_every = 7
  config.train.log_every = 3
  config.eval.seed = 7
  assert workdir.accept_run(config, path)['fingerprint'] == first['fingerprint']


@pytest.mark.parametrize('changes, fields', [
    ({
        'seed': 1
    }, ['config.seed']),
    ({
        'train.g_lr': 2e-3,
        'train.d_lr': 3e-3
    }, ['config.train.d_lr', 'config.train.g_lr']),
    ({
        'name': 'metric',
        'train.use_aux_discriminator': False
    }, ['config.name', 'config.train.use_aux_discriminator']),
])
def test_another_run_is_refused_naming_the_fields_that_differ(tmp_path, changes, fields):
  path = str(tmp_path)
  workdir.accept_run(helpers.tiny_config(), path)
  os.makedirs(os.path.join(path, 'checkpoints', '2'))  # The identity binds once a checkpoint exists.
  config = helpers.tiny_config()
  for field, value in changes.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  with pytest.raises(workdir.WorkdirError, match='holds a run of another config') as error:
    workdir.accept_run(config, path)
  named = re.findall(r'(config\.[\w.]+) = ', str(error.value))
  assert named == fields, str(error.value)


def test_a_refused_run_leaves_config_json_as_it_was(tmp_path):
  path = str(tmp_path / 'workdir')
  config = helpers.tiny_config()
  workdir.accept_run(config, path)
  files.write_text(os.path.join(path, 'config.json'), config.to_json_best_effort(indent=2))
  os.makedirs(os.path.join(path, 'checkpoints', '2'))
  before = open(os.path.join(path, 'config.json')).read()
  config.seed = 5
  with pytest.raises(workdir.WorkdirError, match=r'config\.seed = 5 here, 0 in the work directory'):
    train.train(config, path)
  assert open(os.path.join(path, 'config.json')).read() == before


def test_a_work_directory_of_an_older_version_is_judged_by_its_config_json(tmp_path):
  path = str(tmp_path)
  config = helpers.tiny_config()
  files.write_text(os.path.join(path, 'config.json'), config.to_json_best_effort(indent=2))
  os.makedirs(os.path.join(path, 'checkpoints', '4'))
  assert workdir.accept_run(config, path)['verified_from'] == 5  # Its checkpoints have no checksums.
  os.remove(os.path.join(path, workdir.IDENTITY_FILE))
  config.train.g_lr *= 2
  with pytest.raises(workdir.WorkdirError, match=r'config\.train\.g_lr'):
    workdir.accept_run(config, path)


def test_a_run_recorded_before_fields_moved_is_still_the_same_run(tmp_path):
  """run.json and config.json of a version that named model.wavegan.dim model.generator_dim (etc.)."""
  path = str(tmp_path)
  config = helpers.tiny_config()
  record = workdir.accept_run(config, path)
  fields = {
      next((old for old, new in config_lib.RENAMED_FIELDS.items() if new == k), k):
          v for k, v in record['fields'].items()
  }
  assert 'model.generator_dim' in fields and 'model.wavegan.dim' not in fields
  files.write_json(os.path.join(path, workdir.IDENTITY_FILE), {**record, 'fields': fields}, checksum=True)
  written = json.loads(config.to_json_best_effort())
  written['model'].update({'generator_dim' if k == 'dim' else k: v for k, v in written['model'].pop('wavegan').items()})
  files.write_text(os.path.join(path, 'config.json'), json.dumps(written))
  os.makedirs(os.path.join(path, 'checkpoints', '2'))
  assert workdir.run_config(path).model.wavegan.dim == config.model.wavegan.dim  # Evaluation, translation, export.
  workdir.accept_run(config, path)  # Training resumes it.
  config.model.wavegan.dim += 1
  with pytest.raises(workdir.WorkdirError, match=r'config\.model\.wavegan\.dim = 3 here, 2 in'):
    workdir.accept_run(config, path)


def test_without_a_checkpoint_another_config_takes_the_directory_over(tmp_path, caplog):
  """A run that failed before its first checkpoint (e.g. a batch that did not fit) does not lock the corrected rerun
  out; the stage artefacts are kept when only train.* fields differ, and set aside otherwise."""
  path = str(tmp_path)
  config = helpers.tiny_config()
  workdir.accept_run(config, path)
  os.makedirs(os.path.join(path, 'audio_embedding'))
  files.write_json(os.path.join(path, 'statistics.json'), {'mu_x': 1.0}, checksum=True)
  config.train.batch_size = 2
  record = workdir.accept_run(config, path)
  assert record['fields']['train.batch_size'] == 2 and 'holds no checkpoint' in caplog.text
  assert sorted(os.listdir(path)) == ['audio_embedding', 'run.json', 'statistics.json']
  config.seed = 3  # The stages depend on it: their artefacts are set aside.
  assert workdir.accept_run(config, path)['fields']['seed'] == 3
  assert sorted(os.listdir(path)) == ['audio_embedding.stale-config', 'run.json', 'statistics.json.stale-config']
  assert workdir.identity(path)['fields']['seed'] == 3


def test_commands_on_a_trained_run_check_its_config_json_against_its_identity(tmp_path):
  path = str(tmp_path)
  config = helpers.tiny_config()
  workdir.accept_run(config, path)
  config_json = os.path.join(path, 'config.json')
  files.write_text(config_json, config.to_json_best_effort(indent=2))
  assert workdir.run_config(path).audio.sample_rate == config.audio.sample_rate
  edited = helpers.tiny_config()
  edited.audio.sample_rate = 8000
  files.write_text(config_json, edited.to_json_best_effort(indent=2))
  with pytest.raises(
      workdir.WorkdirError, match=r'config.json is not the config of the run .*config\.audio\.sample_'
      r'rate = 8000 here, 16000 in the work directory'):
    workdir.run_config(path)
  with pytest.raises(workdir.WorkdirError, match=r'The --config given is not the config of the run.*config\.seed'):
    other = helpers.tiny_config()
    other.seed = 4
    workdir.run_config(path, other)
  for damage, message in ((b'\xff\xfe garbage', 'is not valid JSON'), (b'{}', 'is not a config written by training'),
                          (b'[1, 2]', 'is not a config written by training')):
    with open(config_json, 'wb') as f:
      f.write(damage)
    with pytest.raises(config_lib.ConfigError, match=message):
      workdir.run_config(path)
  with open(os.path.join(path, 'run.json'), 'w') as f:
    f.write('{"fields": {}, "verified_from": 0}')  # No checksum: not accepted unverified.
  with pytest.raises(workdir.WorkdirError, match='run.json, the identity of the run .* is corrupt .*no checksum'):
    workdir.verified_from(path)
