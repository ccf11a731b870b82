"""The photo evaluator on generated photos with a tiny trained model: every face translated and measured."""

import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from playwright import sync_api as playwright_api
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import checkpoint
from face2music_jax import config_lib
from face2music_jax import translator
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import photos
from face2music_jax.faces import images

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


def test_every_face_of_a_folder_is_translated_and_measured(trained_tiny_workdir, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  head = skimage_data.astronaut()[20:260, 120:340]
  Image.fromarray(np.concatenate([head, head[:, ::-1]], axis=1)).save(folder / 'pair.jpg', quality=92)
  Image.fromarray(np.clip(head.astype(int) * 0.7, 0, 255).astype(np.uint8)).save(folder / 'dim.png')
  dim = np.clip(head.astype(int) * 0.8, 0, 255).astype(np.uint8)
  Image.fromarray(np.concatenate([head, head[:, ::-1], dim, dim[:, ::-1]], axis=1)).save(folder / 'row.png')
  Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(folder / 'no_face.png')
  (folder / 'notes.txt').write_text('not an image: ignored')
  config = config_lib.load_config(trained_tiny_workdir)
  out = str(tmp_path / 'eval_photos')
  summary = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), out)

  pitches = list(config_lib.listening_pitches(config))  # 48 and 60 at the tiny size.
  assert summary['num_faces'] == 7 and summary['num_photos'] == 3
  assert [s.split(':')[0] for s in summary['skipped_photos']] == ['no_face.png']
  assert sorted(summary['per_pitch']) == pitches
  head = summary['headline']
  for key in ('in_tune_wide_min', 'in_tune_near_min'):
    assert 0 <= head[key] <= 1
  assert head['end_db_max'] <= -30  # Every note ends in its release.
  assert 0 <= head['pure_tones'] <= 1 and 0 <= head['pure_tones_real'] <= 1  # The real notes at the same pitches.
  assert head['pure_tones'] == pytest.approx(np.mean([v['pure_tones'] for v in summary['per_pitch'].values()]))
  low, high = head['pearson_independent_interval']  # Over the faces (tests/test_metrics.py); shown on the page.
  assert -1 <= low < high <= 1
  assert sum(summary['families']['counts'].values()) == 7 * len(pitches)
  assert 1 <= head['effective_families'] <= len(summary['families']['counts'])
  # The same with the family the frozen family classifier names; the real notes' spread beside it.
  assert sum(summary['families_classifier']['counts'].values()) == 7 * len(pitches)
  assert 1 <= head['effective_families_classifier'] <= len(summary['families_classifier']['counts'])
  assert head['largest_family_share_classifier'] == summary['families_classifier']['largest_share']
  # Over the faces (tests/test_metrics.py: there they hold the full set's figures); shown on the page.
  families_low, families_high = head['effective_families_classifier_interval']
  assert 1 <= families_low <= families_high <= len(summary['families_classifier']['counts'])
  share_low, share_high = head['largest_family_share_classifier_interval']
  assert 0 < share_low <= share_high <= 1
  real = summary['real_families_classifier']['counts']  # The real notes at the listening pitches.
  inputs = inputs_lib.for_config(config)
  midi = np.concatenate([config_lib.midi_pitch(config, inputs.notes(s)['pitch']) for s in ('train', 'valid', 'test')])
  assert sum(real.values()) == np.isin(midi, pitches).sum() > 0
  assert summary['closest_pair']['faces'][0] != summary['closest_pair']['faces'][1]
  with open(os.path.join(out, 'metrics.json')) as f:
    assert json.load(f)['num_faces'] == 7
  page = open(os.path.join(out, 'index.html')).read()
  assert page.count('<audio') == 7 * len(pitches) and 'viewport' in page
  assert f'<td>[{low:.3g}, {high:.3g}]</td>' in page
  assert f'<td>[{families_low:.3g}, {families_high:.3g}]</td>' in page
  assert len(os.listdir(os.path.join(out, 'notes'))) == 7 * len(pitches)
  if CHROMIUM:  # At 400 px the page stays 400 px wide: the table of notes scrolls within it.
    with playwright_api.sync_playwright() as p:
      browser = p.chromium.launch(executable_path=CHROMIUM)
      tab = browser.new_page(viewport={'width': 400, 'height': 800})
      tab.goto(f'file://{os.path.join(out, "index.html")}')
      assert tab.evaluate('document.documentElement.scrollWidth') <= 400
      browser.close()
  (tmp_path / 'empty').mkdir()
  with pytest.raises(images.ImageError, match='holds no image'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(tmp_path / 'empty'), out)
  with pytest.raises(images.ImageError, match='does not exist'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(tmp_path / 'nowhere'), out)


def test_a_bundle_judged_with_a_work_directorys_yardsticks_scores_as_its_work_directory(trained_tiny_workdir, tmp_path):
  """--model: the generator of a bundle, judged with another directory's phi and real notes. The bundle exported
  from the work directory itself must score exactly as the work directory; a bundle of other audio is refused."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(skimage_data.astronaut()[20:260, 120:340]).save(folder / 'one.png')
  config = config_lib.load_config(trained_tiny_workdir)
  bundle = str(tmp_path / 'bundle')
  translator.export_bundle(trained_tiny_workdir, bundle, measures={})
  own = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'own'))
  judged = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'judged'), model=bundle)
  assert judged['model'] == bundle and own['model'] == trained_tiny_workdir and judged['num_faces'] == 1
  assert judged['per_pitch'] == own['per_pitch'] and judged['headline'] == own['headline']
  with pytest.raises(translator.BundleError, match=r'differ in audio settings \(audio\.pitch_max, audio\.pitch_min\)'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'other'), model='shipped')


def test_an_earlier_checkpoint_of_the_work_directory_is_judged_when_named(trained_tiny_workdir, tmp_path):
  """step: the kept checkpoint of that step writes the notes, and the metrics say which; a step not kept, or a step
  with another model, is refused."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(skimage_data.astronaut()[20:260, 120:340]).save(folder / 'one.png')
  config = config_lib.load_config(trained_tiny_workdir)
  newest = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'newest'))
  earlier = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'earlier'), step=2)
  assert (newest['checkpoint_step'], earlier['checkpoint_step']) == (4, 2)  # The tiny run keeps steps 2 and 4.
  assert ', checkpoint step 2</p>' in (tmp_path / 'earlier' / 'index.html').read_text()
  note = sorted(os.listdir(tmp_path / 'newest' / 'notes'))[0]
  assert (tmp_path / 'newest' / 'notes' / note).read_bytes() != (tmp_path / 'earlier' / 'notes' / note).read_bytes()
  with pytest.raises(checkpoint.CheckpointError, match='No GAN checkpoint of step 3 .* keeps steps 2, 4'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'three'), step=3)
  with pytest.raises(ValueError, match='not of another model'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'x'), model='shipped', step=2)
  with pytest.raises(translator.BundleError, match='holds one model'):
    translator.Translator.load(None, step=2)
  assert not os.path.exists(tmp_path / 'three') and not os.path.exists(tmp_path / 'x')


def test_the_faces_file_of_a_folder_is_judged_as_the_folder(trained_tiny_workdir, tmp_path):
  """`face2music export_data --photos` (a command, from another directory) writes the faces of a folder to one file;
  judged from that file, without a face detector, the model scores as on the folder. A file of another embedder or a
  damaged one is refused, naming it."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  head = skimage_data.astronaut()[20:260, 120:340]
  Image.fromarray(np.concatenate([head, head[:, ::-1]], axis=1)).save(folder / 'pair.jpg', quality=92)
  Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(folder / 'no_face.png')
  faces_file = tmp_path / 'faces.npz'
  done = subprocess.run([
      sys.executable, '-m', 'face2music_jax.apps.export_data', '--config=aux:tiny', f'--photos={folder}',
      f'--out={faces_file}'
  ], cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'Wrote {faces_file}: 2 faces of 1 photos (1 without a face)' in done.stdout
  saved = photos.load_faces(str(faces_file))
  assert saved['embedder'] == 'dlib' and saved['photo_dir'] == str(folder) and len(saved['box']) == 2
  assert [s.split(':')[0] for s in saved['skipped']] == ['no_face.png']

  config = config_lib.load_config(trained_tiny_workdir)
  from_folder = photos.evaluate_photos(config, trained_tiny_workdir, str(folder), str(tmp_path / 'folder'))
  blocked = dict.fromkeys(('dlib', 'face_recognition_models'))
  with mock.patch.dict(sys.modules, blocked):  # No new face embedder could be made: none is needed.
    from_file = photos.evaluate_photos(config, trained_tiny_workdir, str(faces_file), str(tmp_path / 'file'))
  assert from_file['per_pitch'] == from_folder['per_pitch'] and from_file['headline'] == from_folder['headline']
  assert from_file['photo_dir'] == str(folder) and from_file['faces_file'] == str(faces_file)
  assert from_folder['photo_dir'] == str(folder) and from_folder['faces_file'] is None
  assert from_file['skipped_photos'] == from_folder['skipped_photos'] and from_file['num_faces'] == 2

  other = tmp_path / 'other.npz'
  photos.save_faces(str(other), {k: v for k, v in saved.items()}, 'network:0123abcd', str(folder))
  with pytest.raises(photos.PhotoFacesError,
                     match=r"embedded by 'network:0123abcd'; the model embeds faces with 'dlib'"):
    photos.evaluate_photos(config, trained_tiny_workdir, str(other), str(tmp_path / 'other'))
  damaged = tmp_path / 'damaged.npz'
  damaged.write_bytes(faces_file.read_bytes()[:1000])
  with pytest.raises(photos.PhotoFacesError, match='damaged.npz is not a readable faces file'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(damaged), str(tmp_path / 'damaged'))
  photo = tmp_path / 'photo.jpg'  # A photo's path where a folder or a faces file belongs.
  photo.write_bytes(b'\xff\xd8\xff\xe0 not a zip')
  with pytest.raises(photos.PhotoFacesError,
                     match=r'photo.jpg is not a readable faces file .*--photos takes a folder of photos or a faces'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(photo), str(tmp_path / 'photo'))
  with pytest.raises(photos.PhotoFacesError,
                     match='No faces file .*missing.npz: write one with face2music export_data'):
    photos.evaluate_photos(config, trained_tiny_workdir, str(tmp_path / 'missing.npz'), str(tmp_path / 'missing'))
  assert not any((tmp_path / name).exists() for name in ('other', 'damaged', 'photo', 'missing'))
