"""Translation of face photos into WAV files with a tiny trained model: every face of a photo, the command line
(run_translate.py) and its errors."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import checkpoint
from face2music_jax import train
from face2music_jax import translate
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tiny_data_dir, tmp_path_factory):
  """A tiny aux model with the harmonic generator (the `small` default) trained for its 4 steps, and image files:
  the astronaut's head (one face), her face twice side by side, a flat grey image, a text file named like an
  image."""
  config = helpers.tiny_config('aux')
  config.model.generator = 'harmonic'
  config.data_dir = tiny_data_dir
  root = tmp_path_factory.mktemp('translate')
  workdir = str(root / 'workdir')
  train.train(config, workdir)
  images = root / 'images'
  images.mkdir()
  astronaut = skimage_data.astronaut()
  # The top 300 rows, her head: lower down, dlib's detector takes the patch on her suit for a face in the JPEG
  # (score 0.04, against 1.57 for her face and a threshold of 0), which would give the photo a second WAV.
  Image.fromarray(astronaut[:300]).save(images / 'astronaut.jpg', quality=95)
  face = astronaut[20:260, 120:340]  # Her head, 220 pixels wide.
  Image.fromarray(np.concatenate([face, face], axis=1)).save(images / 'twins.png')
  Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(images / 'grey.png')
  (images / 'not_an_image.jpg').write_text('hello')
  return config, workdir, images


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, 'run_translate.py'), *args], cwd=ROOT, env={
      **os.environ, 'JAX_PLATFORMS': 'cpu'
  }, capture_output=True, text=True, timeout=600)


def test_cli_translates_a_face_and_keeps_existing_outputs(trained, tmp_path):
  config, workdir, images = trained
  face = str(images / 'astronaut.jpg')
  out = tmp_path / 'out'
  done = _run(f'--workdir={workdir}', '--pitch=50', f'--output_dir={out}', face)  # Config from config.json.
  assert done.returncode == 0, done.stderr[-3000:]
  wav, image, box = done.stdout.strip().split('\t')
  assert (wav, image) == (str(out / 'astronaut.wav'), face) and box.startswith('face (left, top, right, bottom) = (')
  audio, rate = soundfile.read(out / 'astronaut.wav')
  assert rate == 16000 and audio.shape == (config.audio.length,)
  assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
  refused = _run(f'--workdir={workdir}', f'--output_dir={out}', face)
  assert refused.returncode == 2 and 'exists already' in refused.stderr and '--overwrite' in refused.stderr
  assert refused.stderr.strip().splitlines()[-1].startswith('Error:')  # A message, not a traceback.
  assert 'Traceback' not in refused.stderr


def test_every_face_of_a_photo_gets_its_own_wav_named_left_to_right(trained, tmp_path):
  config, workdir, images = trained
  twins, single = str(images / 'twins.png'), str(images / 'astronaut.jpg')
  translations = translate.translate(config, workdir, [twins, single], output_dir=str(tmp_path))
  assert [(t.image, os.path.basename(t.wav)) for t in translations] == [(twins, 'twins_face0.wav'),
                                                                        (twins, 'twins_face1.wav'),
                                                                        (single, 'astronaut.wav')]
  left, right = translations[0].box, translations[1].box
  # The same face in each half of the 440-pixel-wide photo: boxes about 220 pixels apart (the detector's windows
  # lie on a grid), each within its half, at the same height.
  assert 0 <= left[0] < left[2] < 220 <= right[0] < right[2] < 440
  assert abs(right[0] - left[0] - 220) <= 8 and abs(right[1] - left[1]) <= 8
  for t in translations:
    audio, rate = soundfile.read(t.wav)
    assert rate == 16000 and audio.shape == (config.audio.length,) and np.all(np.isfinite(audio))


def test_translate_overwrites_when_asked(trained, tmp_path):
  config, workdir, images = trained
  out = str(tmp_path)
  face = str(images / 'astronaut.jpg')
  (translation,) = translate.translate(config, workdir, [face], midi_pitch=60, output_dir=out)
  path = translation.wav
  with pytest.raises(translate.TranslationError, match='exists already'):
    translate.translate(config, workdir, [face], output_dir=out)
  low, _ = soundfile.read(path)
  translate.translate(config, workdir, [face], midi_pitch=48, output_dir=out, overwrite=True)
  high, _ = soundfile.read(path)
  assert not np.array_equal(low, high)  # Another pitch, another note.


def test_errors_name_the_problem(trained, tmp_path):
  config, workdir, images = trained
  out = str(tmp_path / 'out')
  with pytest.raises(translate.TranslationError, match='No usable face in .*grey.png'):
    translate.translate(config, workdir, [str(images / 'grey.png')], output_dir=out)
  with pytest.raises(translate.TranslationError, match='Cannot read the image .*not_an_image.jpg'):
    translate.translate(config, workdir, [str(images / 'not_an_image.jpg')], output_dir=out)
  with pytest.raises(translate.TranslationError, match='Cannot read the image .*missing.jpg: no such file'):
    translate.translate(config, workdir, [str(images / 'missing.jpg')], output_dir=out)
  with pytest.raises(translate.TranslationError, match=r'--pitch=90 is outside the MIDI pitches 48\.\.60'):
    translate.translate(config, workdir, [str(images / 'astronaut.jpg')], midi_pitch=90, output_dir=out)
  with pytest.raises(checkpoint.CheckpointError, match='No GAN checkpoint'):
    translate.translate(config, str(tmp_path / 'untrained'), [str(images / 'astronaut.jpg')], output_dir=out)
  assert not os.path.exists(out)  # Nothing written by a failed translation.


def test_cli_without_a_checkpoint_fails_with_a_message(trained, tmp_path):
  config, _, images = trained
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text(config.to_json())
  failed = _run(f'--workdir={empty}', str(images / 'astronaut.jpg'))
  assert failed.returncode == 2
  assert 'Error: No GAN checkpoint' in failed.stderr and 'Traceback' not in failed.stderr


def test_an_unwritable_output_directory_is_named_before_any_work(trained, tmp_path, monkeypatch):
  config, workdir, images = trained
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  out = str(blocker / 'out')
  monkeypatch.setattr(translate, 'embed_faces', lambda *args: pytest.fail('Faces were embedded first.'))
  monkeypatch.setattr(translate.gan, 'restore_generator', lambda *args: pytest.fail('The model was loaded first.'))
  with pytest.raises(PermissionError, match=f'The output directory {re.escape(out)} is not writable'):
    translate.translate(config, workdir, [str(images / 'astronaut.jpg')], output_dir=out)
