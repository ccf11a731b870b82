"""Translation of face photos with a tiny trained model: the Python API (Translator), bundles, melodies, the
command line (run_translate.py / face2music translate) and its errors."""

import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import translate
from face2music_jax import translator as translator_lib
from face2music_jax.audio import listening
from face2music_jax.audio import melody as melody_lib

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """The astronaut's head (one face), her face twice side by side, a flat grey image, a text file named like an
  image."""
  root = tmp_path_factory.mktemp('images')
  astronaut = skimage_data.astronaut()
  # The top 300 rows, her head: lower down, dlib's detector takes the patch on her suit for a face in the JPEG.
  Image.fromarray(astronaut[:300]).save(root / 'astronaut.jpg', quality=95)
  face = astronaut[20:260, 120:340]  # Her head, 220 pixels wide.
  Image.fromarray(np.concatenate([face, face], axis=1)).save(root / 'twins.png')
  Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / 'grey.png')
  (root / 'not_an_image.jpg').write_text('hello')
  return root


@pytest.fixture(scope='module')
def model(trained_tiny_workdir):
  return translator_lib.Translator.load(trained_tiny_workdir)


def _run(*args: str, cwd: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, 'run_translate.py'), *args], cwd=cwd, env={
      **os.environ, 'JAX_PLATFORMS': 'cpu'
  }, capture_output=True, text=True, timeout=600)


def test_translator_gives_each_face_left_to_right_from_a_path_an_array_or_a_pil_image(model, images):
  twins = str(images / 'twins.png')
  faces = model.translate(twins, pitch='C4')
  assert len(faces) == 2 and faces[0].box[0] < 220 <= faces[1].box[0]
  assert all(
      f.audio.shape == (model.config.audio.length,) and f.sample_rate == 16000 and f.midi_pitch == 60 for f in faces)
  same = model.translate(np.asarray(Image.open(twins)), pitch=60)
  also = model.translate(Image.open(twins), pitch=60)
  np.testing.assert_allclose(same[0].audio, faces[0].audio, atol=1e-6)
  np.testing.assert_allclose(also[1].audio, faces[1].audio, atol=1e-6)
  with pytest.raises(ValueError, match=r"Pitch 'C7' \(MIDI 96\) is outside the range .* MIDI 48\.\.60"):
    model.translate(twins, pitch='C7')
  with pytest.raises(ValueError, match="'H4' is not a pitch"):
    model.translate(twins, pitch='H4')
  with pytest.raises(translator_lib.NoFaceError, match='grey.png'):
    model.translate(str(images / 'grey.png'))
  # generate, the API under translate, refuses what G would turn into silence or NaN rather than an error.
  z = np.zeros((2, model.config.data.embedding_dim), np.float32)
  assert model.generate(z, [48, 60]).shape == (2, model.config.audio.length)
  with pytest.raises(ValueError, match=r'MIDI pitch 72 is outside the range .* MIDI 48\.\.60'):
    model.generate(z, [60, 72])
  with pytest.raises(ValueError, match=r'shape \[N, 128\] .* got \(2, 64\)'):
    model.generate(z[:, :64], [60, 60])
  with pytest.raises(ValueError, match=r'one MIDI pitch per face \(2\)'):
    model.generate(z, [60])
  np.testing.assert_array_equal(model.generate(z, 60), model.generate(z, [60, 60]))  # One pitch for every face.
  with pytest.raises(ValueError, match=r'whole MIDI numbers; got \[60.5, 60.0\]'):
    model.generate(z, [60.5, 60])
  with pytest.raises(ValueError, match='note names: Translator.midi'):
    model.generate(z, ['C4', 'C4'])


def test_a_bundle_round_trips_and_a_damaged_one_is_refused(model, trained_tiny_workdir, images, tmp_path):
  bundle = str(tmp_path / 'bundle')
  manifest = translator_lib.export_bundle(trained_tiny_workdir, bundle, command='test')
  assert manifest['step'] == 4 and set(manifest['sha256']) == {'config.json', 'generator.msgpack'}
  loaded = translator_lib.Translator.load(bundle)
  face = str(images / 'astronaut.jpg')
  np.testing.assert_allclose(loaded.translate(face, 50)[0].audio, model.translate(face, 50)[0].audio, atol=1e-6)
  blob = bytearray(open(os.path.join(bundle, 'generator.msgpack'), 'rb').read())
  blob[len(blob) // 2] ^= 0x01
  open(os.path.join(bundle, 'generator.msgpack'), 'wb').write(bytes(blob))
  with pytest.raises(translator_lib.BundleError, match='generator.msgpack does not match the checksum'):
    translator_lib.Translator.load(bundle)
  os.remove(os.path.join(bundle, 'config.json'))
  with pytest.raises(translator_lib.BundleError, match='config.json is missing'):
    translator_lib.Translator.load(bundle)
  with open(os.path.join(bundle, 'manifest.json'), 'w') as f:
    f.write('{not json')
  with pytest.raises(translator_lib.BundleError, match='manifest.json is corrupt'):
    translator_lib.Translator.load(bundle)


def test_the_shipped_model_translates_a_face_in_tune_and_its_manifest_is_true(caplog):
  with caplog.at_level(logging.INFO):
    model = translator_lib.Translator.load()
  # Its config is in today's field names: loading it reports no migration (5 lines on every translation before).
  assert 'older version' not in caplog.text, caplog.text
  manifest = model.manifest
  assert manifest['format'] == 1 and manifest['step'] > 0 and manifest['commit']
  files = sum(
      os.path.getsize(os.path.join(translator_lib.DEFAULT_BUNDLE, f))
      for f in os.listdir(translator_lib.DEFAULT_BUNDLE))
  assert files <= 10_000_000
  face = skimage_data.astronaut()[:300]
  low, high = model.pitch_range
  pitches = [p for p in (36, 48, 60, 72) if low <= p <= high]
  audio = np.stack([model.translate(face, p)[0].audio for p in pitches])
  f0, _ = listening.estimate_pitch(audio, model.sample_rate)
  assert np.all(np.abs(listening.cents_off(f0, np.array(pitches))) <= 50), (pitches, f0)


def test_write_wavs_names_the_files_after_a_path_of_any_kind(images, tmp_path):
  model = translator_lib.Translator.load()
  written = model.write_wavs(images / 'astronaut.jpg', tmp_path / 'out')  # pathlib paths (the stem was 'image').
  assert written == [os.path.join(tmp_path / 'out', 'astronaut_face0.wav')] and os.path.isfile(written[0])


@pytest.mark.parametrize('doc', ['README.md', 'docs/usage.md'])
def test_the_python_example_of_the_docs_runs_as_written(doc, images, tmp_path):
  """The docs' Python block, run from a fresh directory with a photo named as it names it."""
  with open(os.path.join(ROOT, doc)) as f:
    (code,) = re.findall(r'```python\n(.*?)```', f.read(), re.DOTALL)
  shutil.copy(images / 'twins.png', tmp_path / 'group.jpg')  # Two faces (a PNG under a .jpg name: PIL reads it).
  done = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env={
      **os.environ, 'JAX_PLATFORMS': 'cpu'
  }, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'out')) == ['group_face0.wav', 'group_face1.wav']
  audio, rate = soundfile.read(tmp_path / 'out' / 'group_face0.wav')
  assert rate == 16000 and audio.ndim == 1 and np.abs(audio).max() > 0.01


def test_a_melody_is_played_in_order_held_and_released(model, images):
  (face,) = model.translate(str(images / 'astronaut.jpg'), melody='C3 E3 G3:2 C4')
  sr = face.sample_rate
  assert face.audio.shape == (int(2.5 * sr),)  # 1 + 1 + 2 + 1 beats at 120 bpm.
  # pYIN in the middle of each note finds its pitch, in order; the long G3 is held (loud) through its second beat.
  for midi, (start, end) in zip((48, 52, 55, 60), ((0.1, 0.4), (0.6, 0.9), (1.1, 1.9), (2.1, 2.4))):
    f0, _ = listening.estimate_pitch(face.audio[None, int(start * sr):int(end * sr)], sr)
    assert abs(listening.cents_off(f0, [midi])[0]) <= 50, (midi, f0)
  g3 = face.audio[int(1.0 * sr):int(2.0 * sr)]
  assert np.sqrt(np.mean(g3[-int(0.4 * sr):-int(0.1 * sr)]**2)) > 0.2 * np.sqrt(np.mean(g3[:int(0.3 * sr)]**2))
  assert listening.end_level_db(face.audio[None], sr)[0] <= -30  # A release at the end, no click.
  with pytest.raises(ValueError, match="'X4' in the melody is not a note"):
    model.translate(str(images / 'astronaut.jpg'), melody='C3 X4')


def test_melody_parsing_and_midi_files(tmp_path):
  notes = melody_lib.parse('C4 F#3:2 R 60:0.5, Bb2', bpm=60)
  assert [(n.midi, n.onset_s, n.duration_s) for n in notes] == [(60, 0, 1), (54, 1, 2), (60, 4, 0.5), (46, 4.5, 1)]
  import pretty_midi  # pylint: disable=import-outside-toplevel
  song = pretty_midi.PrettyMIDI()
  piano = pretty_midi.Instrument(0)
  piano.notes += [pretty_midi.Note(90, 64, 0.5, 1.0), pretty_midi.Note(100, 60, 0.0, 0.5)]
  song.instruments.append(piano)
  song.write(str(tmp_path / 'tune.mid'))
  assert [(n.midi, n.onset_s, n.velocity) for n in melody_lib.read_midi(str(tmp_path / 'tune.mid'))] == [(60, 0.0, 100),
                                                                                                         (64, 0.5, 90)]
  (tmp_path / 'bad.mid').write_text('not midi')
  with pytest.raises(ValueError, match='Cannot read .*bad.mid as a MIDI file'):
    melody_lib.read_midi(str(tmp_path / 'bad.mid'))
  for rests in ('R', 'R:2 R', ''):
    with pytest.raises(ValueError, match='has no note'):
      melody_lib.parse(rests)
  melody_lib.check_length(notes, 5.5)
  with pytest.raises(ValueError, match='lasts 6 s, longer than the 5 s allowed'):
    melody_lib.check_length(notes, 5.0)


def test_bad_melodies_are_one_line_before_the_model_is_loaded(images, tmp_path):
  photo = str(images / 'astronaut.jpg')
  for args, message in ((['--melody=R R'], 'Error: The melody'), (['--melody='], 'Error: The melody'),
                        (['--melody=C4:4000'], 'Error: The melody lasts 2000 s, longer than the 600 s allowed.')):
    done = _run(*args, photo, cwd=str(tmp_path))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-2000:]
    assert 'shipped model' not in done.stderr and not os.path.exists(tmp_path / 'translations')
  done = _run('--midi=tune.mid', '--bpm=90', photo, cwd=str(tmp_path))
  assert done.returncode == 1 and '--bpm is the tempo of --melody' in done.stderr


def test_export_replaces_a_bundle_and_nothing_else(trained_tiny_workdir, tmp_path):
  before = sorted(os.listdir(trained_tiny_workdir))
  for out in (trained_tiny_workdir, os.path.join(trained_tiny_workdir,
                                                 'bundle'), os.path.dirname(trained_tiny_workdir)):
    with pytest.raises(translator_lib.BundleError, match='the work directory'):
      translator_lib.export_bundle(trained_tiny_workdir, out)
  assert sorted(os.listdir(trained_tiny_workdir)) == before
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('keep me')
  with pytest.raises(translator_lib.BundleError, match='is not a model bundle'):
    translator_lib.export_bundle(trained_tiny_workdir, str(mine))
  assert (mine / 'notes.txt').read_text() == 'keep me'
  for _ in range(2):  # A new directory named with a trailing slash (the docs' form), then over the bundle.
    translator_lib.export_bundle(trained_tiny_workdir, str(tmp_path / 'bundle') + os.sep)
    assert sorted(os.listdir(tmp_path / 'bundle')) == ['config.json', 'generator.msgpack', 'manifest.json']
  assert sorted(os.listdir(tmp_path)) == ['bundle', 'mine']
  config = translator_lib.Translator.load(str(tmp_path / 'bundle')).config
  with pytest.raises(translator_lib.BundleError, match='carries its own config'):
    translator_lib.Translator.load(str(tmp_path / 'bundle'), config)


def test_translate_writes_a_wav_per_face_skips_photos_without_faces_and_keeps_existing_outputs(model, images, tmp_path):
  out = str(tmp_path / 'out')
  translations, skipped = translate.translate(model, [str(images)], pitch=50, output_dir=out, group=True, boxes=True)
  assert [os.path.basename(t.wav) for t in translations
         ] == ['astronaut_face0.wav', 'twins_face0.wav', 'twins_face1.wav']
  assert sorted(os.listdir(out)) == sorted([
      'astronaut_face0.wav', 'astronaut_group.wav', 'astronaut_boxes.png', 'twins_face0.wav', 'twins_face1.wav',
      'twins_group.wav', 'twins_boxes.png'
  ])
  assert [s.split(':')[0] for s in skipped] == [str(images / 'grey.png'), str(images / 'not_an_image.jpg')]
  group, rate = soundfile.read(os.path.join(out, 'twins_group.wav'))
  assert rate == 16000 and len(group) == 2 * model.config.audio.length + int(0.25 * 16000)
  with pytest.raises(translate.TranslationError, match='exists already'):
    translate.translate(model, [str(images / 'astronaut.jpg')], output_dir=out, pitch=50)
  with pytest.raises(translate.TranslationError, match='No face found in any image'):
    translate.translate(model, [str(images / 'grey.png')], output_dir=out)
  with pytest.raises(translate.TranslationError, match='no such file or folder'):
    translate.translate(model, [str(images / 'missing.jpg')], output_dir=out)
  # --overwrite: the faces of an earlier translation beyond those found now go (a photo edited since, say); other
  # files stay. A photo named twice (the folder and the file) is translated once.
  for name in ('twins_face2.wav', 'twins_face11.wav', 'twins_face2.wav.txt', 'my_twins_face2.wav'):
    open(os.path.join(out, name), 'w').close()
  translations, _ = translate.translate(model, [str(images / 'twins.png'), str(images)], pitch=50, output_dir=out,
                                        overwrite=True)
  assert [os.path.basename(t.wav) for t in translations
         ] == ['twins_face0.wav', 'twins_face1.wav', 'astronaut_face0.wav']
  assert sorted(os.listdir(out)) == sorted([
      'astronaut_face0.wav', 'astronaut_group.wav', 'astronaut_boxes.png', 'twins_face0.wav', 'twins_face1.wav',
      'twins_group.wav', 'twins_boxes.png', 'twins_face2.wav.txt', 'my_twins_face2.wav'
  ])


def test_cli_from_a_fresh_directory_with_note_names_and_a_skipped_photo(trained_tiny_workdir, images, tmp_path):
  cwd = tmp_path / 'fresh'
  cwd.mkdir()
  done = _run(f'--workdir={trained_tiny_workdir}', '--pitch=D3', str(images / 'astronaut.jpg'),
              str(images / 'grey.png'), cwd=str(cwd))
  assert done.returncode == 2, done.stderr[-3000:]  # A skipped photo: the others are written, the exit says so.
  wav, image, box = done.stdout.strip().split('\t')
  assert wav == os.path.join('translations', 'astronaut_face0.wav') and box.startswith('face (left, top')
  assert 'Skipped: ' + str(images / 'grey.png') + ': no face found' in done.stderr
  assert 'Unable to initialize backend' not in done.stderr  # JAX's INFO line on machines without a TPU.
  audio, rate = soundfile.read(cwd / wav)
  f0, _ = listening.estimate_pitch(audio[None], rate)
  assert abs(listening.cents_off(f0, [50])[0]) <= 50, f0  # D3 = MIDI 50.
  refused = _run(f'--workdir={trained_tiny_workdir}', str(images / 'astronaut.jpg'), cwd=str(cwd))
  assert refused.returncode == 2 and 'exists already' in refused.stderr and 'Traceback' not in refused.stderr
  bad = _run(f'--workdir={trained_tiny_workdir}', '--pitch=C9', str(images / 'astronaut.jpg'), cwd=str(cwd))
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith('Error: Pitch')


def test_cli_help_is_quick_and_exits_0(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'face2music_jax.apps.translate', '--help'], cwd=str(tmp_path),
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0 and '--melody' in done.stdout and '--pitch' in done.stdout
  imported = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'face2music_jax.apps.translate', '--help'],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60).stderr
  assert 'tensorflow' not in imported and ' jax' not in imported  # Nothing heavy before the flags are read.


def test_a_model_of_a_workdir_without_a_checkpoint_is_one_line(trained_tiny_workdir, images, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with open(os.path.join(trained_tiny_workdir, 'config.json')) as f:
    (empty / 'config.json').write_text(json.dumps(json.load(f)))
  failed = _run(f'--workdir={empty}', str(images / 'astronaut.jpg'), cwd=str(tmp_path))
  assert failed.returncode == 2
  assert 'Error: No GAN checkpoint' in failed.stderr and 'Traceback' not in failed.stderr


def test_a_config_of_another_run_is_refused_not_ignored(trained_tiny_workdir, images, tmp_path):
  done = _run(f'--workdir={trained_tiny_workdir}', '--config=baseline:tiny', str(images / 'astronaut.jpg'),
              cwd=str(tmp_path))
  assert done.returncode == 2 and 'The --config given is not the config of the run' in done.stderr, done.stderr[-2000:]


def test_an_unwritable_output_directory_is_named_before_any_work(model, images, tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  out = str(blocker / 'out')
  monkeypatch.setattr(model, 'faces', lambda *args: pytest.fail('Faces were looked for first.'))
  with pytest.raises(PermissionError, match=f'The output directory {re.escape(out)} is not writable'):
    translate.translate(model, [str(images / 'astronaut.jpg')], output_dir=out)


def test_a_full_disk_half_way_writes_no_file_and_the_rerun_goes_on(trained_tiny_workdir, images, tmp_path):
  """The outputs are written all or none: a write that fails (here EFBIG from a file-size limit, as ENOSPC would)
  leaves the output directory as it was, and the rerun is not refused on leftovers."""
  out = tmp_path / 'out'
  args = (f'--workdir={trained_tiny_workdir}', '--group', f'--output_dir={out}', str(images / 'astronaut.jpg'),
          str(images / 'twins.png'))
  limit = 20_000  # A note's WAV (16.4 kB) fits; the twins' group piece (40 kB) does not.
  failed = subprocess.run([sys.executable, os.path.join(ROOT, 'run_translate.py'), *args], cwd=str(tmp_path), env={
      **os.environ, 'JAX_PLATFORMS': 'cpu'
  }, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY)))
  assert failed.returncode == 2, failed.stderr[-3000:]
  last = failed.stderr.strip().splitlines()[-1]
  assert last.startswith('Error: Could not write ') and 'twins_group.wav' in last and 'disk full' in last, last
  assert 'Traceback' not in failed.stderr and os.listdir(out) == []
  done = _run(*args, cwd=str(tmp_path))
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(out)) == [
      'astronaut_face0.wav', 'astronaut_group.wav', 'twins_face0.wav', 'twins_face1.wav', 'twins_group.wav'
  ]


def test_ctrl_c_during_translation_stops_with_its_own_code_and_writes_nothing(images, tmp_path):
  photos = tmp_path / 'photos'
  photos.mkdir()
  for k in range(40):
    shutil.copy(images / 'twins.png', photos / f'twins{k:02d}.png')
  log = tmp_path / 'log'
  with open(log, 'w') as out:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'run_translate.py'),
                             str(photos)], cwd=str(tmp_path), env={
                                 **os.environ, 'JAX_PLATFORMS': 'cpu'
                             }, stdout=out, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while 'Using the shipped model' not in log.read_text():  # Logged once the handler is installed.
    assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
    time.sleep(0.05)
  time.sleep(0.5)  # Into the work: 80 faces take seconds.
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=120) == 3, log.read_text()[-3000:]
  text = log.read_text()
  assert 'Stopped: SIGINT received during the translation' in text and 'Traceback' not in text, text[-3000:]
  assert not os.path.exists(tmp_path / 'translations') or os.listdir(tmp_path / 'translations') == []


def test_export_with_a_damaged_evaluation_records_no_measures_and_says_so(trained_tiny_workdir, tmp_path, caplog):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(trained_tiny_workdir, workdir)
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  with open(os.path.join(workdir, 'eval', 'metrics.json'), 'wb') as f:
    f.write(b'\xff{ not json')
  manifest = translator_lib.export_bundle(workdir, str(tmp_path / 'bundle'), command='test')
  assert 'held_out' not in manifest.get('measures', {})
  assert f"{os.path.join(workdir, 'eval', 'metrics.json')} is unreadable" in caplog.text
