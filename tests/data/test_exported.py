"""A config's data exported to one .npz (data/exported.py): read as the TFDS notes and face TFRecords are, and
enough to train and evaluate where TensorFlow, TFDS and dlib are not installed."""

import glob
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from tensorboard.backend.event_processing import event_file_loader

from face2music_jax import gan
from face2music_jax.data import exported
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import photos
from face2music_jax.faces import embedding as face_embedding
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(data_dir: str, path: str = ''):
  config = helpers.tiny_config('aux')
  config.data_dir = data_dir
  config.data.exported = path
  return config


@pytest.fixture
def exported_file(tiny_exported) -> str:
  return tiny_exported  # conftest: the tiny data exported once for the test run.


def test_an_exported_file_serves_the_arrays_of_the_data_it_was_exported_from(tiny_data_dir, exported_file):
  source = inputs_lib.for_config(_config(tiny_data_dir))
  read = inputs_lib.for_config(_config(tiny_data_dir, exported_file))
  assert isinstance(read, exported.ExportedInputs) and not source.serves(_config(tiny_data_dir, exported_file))
  for split in exported.NOTE_SPLITS:
    a, b = source.notes(split), read.notes(split)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{split} {key}')
      assert a[key].dtype == b[key].dtype
  for split in exported.FACE_SPLITS:
    a, b = source.faces(split), read.faces(split)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{split} {key}')
    images = source.faces_with_images(split)['image'], read.faces_with_images(split)['image']
    np.testing.assert_allclose(images[1], images[0], atol=0.5 / 255 + 1e-6)  # Stored as uint8.
    halves = [read.faces(split, process_index=i, process_count=2)['embedding'] for i in (0, 1)]
    assert sum(len(h) for h in halves) == len(b['embedding'])  # Hosts share it by example.


def test_a_file_of_other_data_or_a_damaged_file_is_one_error_naming_it(tiny_data_dir, exported_file, tmp_path):
  config = _config(tiny_data_dir, exported_file)
  config.audio.pitch_max = 58
  with pytest.raises(exported.ExportError, match=r'config\.audio\.pitch_max = 58 here, 60 in the file'):
    inputs_lib.for_config(config)
  damaged = tmp_path / 'damaged.npz'
  damaged.write_bytes(open(exported_file, 'rb').read()[:1000])
  with pytest.raises(exported.ExportError, match='not a readable exported data file'):
    inputs_lib.for_config(_config(tiny_data_dir, str(damaged)))
  with pytest.raises(exported.ExportError, match='not a readable'):
    inputs_lib.for_config(_config(tiny_data_dir, str(tmp_path / 'missing.npz')))


def test_a_file_exported_before_a_data_field_existed_reads_it_as_its_old_value(tiny_data_dir, exported_file, tmp_path):
  """audio.note_rms came after files were exported: such a file holds notes as recorded (note_rms 0)."""
  with np.load(exported_file) as f:
    arrays = dict(f)
  fields = json.loads(str(arrays['data_fields']))
  assert fields.pop('audio.note_rms') == 0.0
  arrays['data_fields'] = np.asarray(json.dumps(fields))
  older = tmp_path / 'older.npz'
  np.savez(older, **arrays)
  assert isinstance(inputs_lib.for_config(_config(tiny_data_dir, str(older))), exported.ExportedInputs)
  levelled = _config(tiny_data_dir, str(older))
  levelled.audio.note_rms = 0.07
  with pytest.raises(exported.ExportError, match=r'config\.audio\.note_rms = 0\.07 here, 0\.0 in the file'):
    inputs_lib.for_config(levelled)


@pytest.mark.slow
def test_without_tensorflow_a_run_trains_the_same_model_from_the_exported_file_and_evaluates(
    tiny_data_dir, exported_file, trained_tiny_workdir, tmp_path):
  """The shared tiny run (TFDS notes, face TFRecords) again, from the exported file, in processes where TensorFlow,
  TFDS and dlib cannot be imported (`face2music train`, and scripts/gpu_train.py, which also evaluates): the
  same generator, bit for bit."""
  workdir = str(tmp_path / 'workdir')
  block = helpers.BLOCK_TENSORFLOW
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'FACE2MUSIC_CACHE': str(tmp_path / 'cache')}
  flags = [
      f'--config={os.path.join(ROOT, "face2music_jax", "configs", "aux.py")}:tiny',
      f'--config.data_dir={tiny_data_dir}', f'--config.data.exported={exported_file}', f'--workdir={workdir}'
  ]
  code = block + (f'sys.argv = ["face2music train", *{flags!r}]\n'
                  'from face2music_jax.apps import train\ntrain.run()\n')
  done = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  # TensorBoard's summaries too (summaries.py writes them without TensorFlow), readable by TensorBoard's reader.
  (events,) = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  events = event_file_loader.EventFileLoader(events).Load()
  steps = [e.step for e in events for v in e.summary.value if v.tag == 'train/g_loss']
  assert steps == [1, 2, 3, 4], steps
  # The accelerator machines' driver: the package's training and evaluation (evaluate.evaluate, as `face2music
  # eval`), each run for at most its seconds; here starting from the shared run's stage artefacts (copies: not
  # trained again), with an override of every run, and judged on the faces file of a photo too.
  faces_file = str(tmp_path / 'faces.npz')
  image = skimage_data.astronaut()[20:260, 120:340]
  photos.save_faces(faces_file, photos.find_faces(face_embedding.embedder_for('dlib'), [_write_png(tmp_path, image)]),
                    'dlib', str(tmp_path))
  args = [
      '--data', exported_file, '--out',
      str(tmp_path / 'gpu'), '--runs=harmonic:tiny:600', '--set=train.log_every=2', '--stages', trained_tiny_workdir,
      '--photos', faces_file
  ]
  code = block + (f'sys.argv = ["gpu_train.py", *{args!r}]\nimport runpy\n'
                  f'runpy.run_path({os.path.join(ROOT, "scripts", "gpu_train.py")!r}, run_name="__main__")\n')
  done = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(tmp_path / 'gpu' / 'results.json') as f:
    (result,) = json.load(f)['runs']
  assert result['completed'] and result['measures']['step'] == 4, result
  assert result['timing']['steps_per_second'] > 0 and 0 <= result['measures']['translations']['in_tune_50c'] <= 1
  assert result['overrides'] == {'train.log_every': 2} and result['photos']['num_faces'] == 1, result
  assert 0 <= result['photos']['headline']['in_tune_near_min'] <= 1
  assert os.path.isfile(tmp_path / 'gpu' / 'run0_harmonic_tiny' / 'eval_photos' / 'index.html')
  with open(tmp_path / 'gpu' / 'run0_harmonic_tiny' / 'config.json') as f:
    assert json.load(f)['train']['log_every'] == 2

  def artefacts(root):  # The stage artefacts' files, with their modification times.
    root = pathlib.Path(root)
    found = [p for name in ('audio_embedding', 'classifiers') for p in (root / name).rglob('*') if p.is_file()]
    return sorted((str(p.relative_to(root)), p.stat().st_mtime) for p in [*found, root / 'statistics.json'])

  # The copies (times kept), not trained again.
  assert artefacts(tmp_path / 'gpu' / 'run0_harmonic_tiny') == artefacts(trained_tiny_workdir)
  config = _config(tiny_data_dir)
  _, expected, _ = gan.restore_generator(config, trained_tiny_workdir)
  config.data.exported = exported_file
  for trained_in in (workdir, str(tmp_path / 'gpu' / 'run0_harmonic_tiny')):
    _, trained, step = gan.restore_generator(config, trained_in)
    assert step == 4
    for a, b in zip(jax.tree.leaves(gan.to_host(expected)), jax.tree.leaves(gan.to_host(trained))):
      np.testing.assert_array_equal(a, b)


def _write_png(folder, image) -> str:
  path = os.path.join(folder, 'face.png')
  Image.fromarray(image).save(path)
  return path


def test_gpu_train_refuses_bad_runs_overrides_and_stages_before_training(tiny_data_dir, exported_file, tmp_path):
  """Each mistake is one line and exit code 2, before anything trains: a field the config lacks, an override that
  makes the config's data other than the file's (named), a --stages folder without the shared artefacts, a --photos
  file that is not a faces file."""
  script = os.path.join(ROOT, 'scripts', 'gpu_train.py')
  common = [sys.executable, script, f'--data={exported_file}', f'--out={tmp_path / "out"}', '--runs=harmonic:tiny:60']
  (tmp_path / 'stages').mkdir()
  (tmp_path / 'faces.npz').write_text('not a faces file')
  for extra, message in ((['--set=train.no_such_field=1'], 'The config has no field train.no_such_field'), ([
      '--set=notes.velocities=(1, 2)'
  ], 'config.notes.velocities = [1, 2] here'), (['--set=notes.velocities'], "expected field=value"),
                         ([f'--stages={tmp_path / "stages"}'], 'lacks audio_embedding, classifiers, statistics.json'),
                         ([f'--photos={tmp_path / "faces.npz"}'], 'faces.npz is not a readable faces file')):
    done = subprocess.run([*common, *extra], cwd=str(tmp_path), env={
        **os.environ, 'JAX_PLATFORMS': 'cpu'
    }, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, (extra, done.stderr[-2000:])
  assert not (tmp_path / 'out').exists()
