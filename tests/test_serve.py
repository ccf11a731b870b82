"""The live page in a real browser: Debian's Chromium driven by Playwright uploads photos to a server started by
the test (`face2music serve` on the shipped model) and checks what a person would meet."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from face2music_jax import serve
from face2music_jax import translator as translator_lib

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
playwright_api = pytest.importorskip('playwright.sync_api')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """A generated group photo (the astronaut's head three times, side by side), a text file named .jpg, a corrupt
  JPEG, and a grey image without a face."""
  root = tmp_path_factory.mktemp('photos')
  face = skimage_data.astronaut()[20:260, 120:340]
  Image.fromarray(np.concatenate([face, face[:, ::-1], face], axis=1)).save(root / 'group.jpg', quality=92)
  (root / 'notes.jpg').write_text('this is not an image')
  good = (root / 'group.jpg').read_bytes()
  (root / 'corrupt.jpg').write_bytes(good[:len(good) // 3])
  Image.fromarray(np.full((300, 300, 3), 120, np.uint8)).save(root / 'grey.png')
  return root


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  """`python run_serve.py` on a free port (the shipped model), stopped after the module."""
  port = _free_port()
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'FACE2MUSIC_CACHE': str(tmp_path_factory.mktemp('cache'))}
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'run_serve.py'), f'--port={port}', '--max_upload_mb=2'],
      cwd=str(tmp_path_factory.mktemp('cwd')), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f'http://127.0.0.1:{port}/'
  deadline = time.time() + 120
  while True:
    try:
      urllib.request.urlopen(url + 'api/info', timeout=2).read()
      break
    except OSError:
      if process.poll() is not None or time.time() > deadline:
        process.kill()
        pytest.fail(f'The server did not start: {process.stdout.read()[-3000:]}')
      time.sleep(0.5)
  yield url
  process.terminate()
  process.wait(timeout=30)


@pytest.fixture()
def page(server, tmp_path):
  if CHROMIUM is None:
    pytest.skip('Chromium is not installed (Debian: apt-get install -y chromium).')
  with playwright_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=['--autoplay-policy=no-user-gesture-required'])
    context = browser.new_context(viewport={'width': 400, 'height': 800})
    tab = context.new_page()
    tab.goto(server)
    tab.wait_for_function("document.querySelectorAll('#pitch option').length > 0")
    yield tab
    browser.close()


def test_a_group_photo_gets_a_numbered_box_and_a_playable_note_per_face_in_order(page, photos):
  page.set_input_files('#file', str(photos / 'group.jpg'))
  page.wait_for_selector('#faces li audio', timeout=60_000)
  assert page.locator('.box').count() == 3
  assert page.locator('#faces li').count() == 3
  assert '3 faces found' in page.inner_text('#message')
  # The boxes lie left to right, each in its third of the photo.
  lefts = page.eval_on_selector_all('.box', 'boxes => boxes.map(b => parseFloat(b.style.left))')
  assert lefts == sorted(lefts) and lefts[0] < 33 < lefts[1] < 66 < lefts[2]
  # Every player loads and has the note's duration (8192 samples at 16 kHz).
  durations = page.eval_on_selector_all(
      '#faces audio', """players => Promise.all(players.map(a => a.readyState >= 1 ? a.duration :
          new Promise(r => a.addEventListener('loadedmetadata', () => r(a.duration), {once: true}))))""")
  assert durations == pytest.approx([8192 / 16000] * 3, abs=0.01)
  # Labels for a screen reader: each player is named by its face's heading.
  assert page.get_attribute('#faces li:nth-child(2) audio', 'aria-labelledby') == 'face-title-1'
  assert 'Face 1 (leftmost)' in page.inner_text('#face-title-0')
  # Play all: the faces play one after another, left to right.
  page.evaluate("""() => { window.order = [];
      document.querySelectorAll('#faces audio').forEach((a, k) => a.addEventListener('play', () => order.push(k))); }"""
               )
  page.click('#playall')
  page.wait_for_function("document.getElementById('message').textContent.startsWith('Played all')", timeout=30_000)
  assert page.evaluate('window.order') == [0, 1, 2]
  # The page fits 400 px: nothing wider than the viewport.
  assert page.evaluate('document.documentElement.scrollWidth') <= 400


def test_the_page_can_be_used_with_the_keyboard(page, photos):
  page.set_input_files('#file', str(photos / 'group.jpg'))
  page.wait_for_selector('#faces li audio', timeout=60_000)
  page.focus('#pitch')
  page.keyboard.press('ArrowDown')  # C#4: a new translation without the mouse.
  page.wait_for_function("document.getElementById('message').textContent.includes('C#4')", timeout=60_000)
  for control in ('#file', '#pitch', '#melody', '#go', '#playall'):
    label = page.evaluate(f"""() => {{ const e = document.querySelector('{control}');
        return (e.labels && e.labels.length ? e.labels[0].textContent : e.textContent).trim(); }}""")
    assert label, f'{control} has no label'


@pytest.mark.parametrize('name, message', [('notes.jpg', 'not a photo'), ('corrupt.jpg', 'not a photo'),
                                           ('grey.png', 'No face found')])
def test_bad_photos_show_a_message_and_the_server_stays_up(page, photos, name, message):
  page.set_input_files('#file', str(photos / 'group.jpg'))
  page.wait_for_selector('#faces li audio', timeout=60_000)
  page.set_input_files('#file', str(photos / name))
  page.wait_for_function("document.getElementById('message').className === 'error'", timeout=60_000)
  assert message in page.inner_text('#message')
  # The message stands alone: the previous photo's boxes and notes are gone, not shown as this photo's.
  assert page.locator('.box').count() == 0 and page.locator('#faces li').count() == 0
  assert page.is_hidden('#stage') and page.is_disabled('#playall')
  page.set_input_files('#file', str(photos / 'group.jpg'))  # The next photo works.
  page.wait_for_selector('#faces li audio', timeout=60_000)


def test_only_the_newest_requests_answer_is_shown(page, photos):
  """A slow answer to an older request (here an error, 4 s late) does not replace the newer request's faces."""
  page.evaluate("""() => { const real = window.fetch; let calls = 0;
      window.fetch = (url, options) => {
        if (String(url).includes('api/translate') && calls++ === 0) {
          return new Promise((resolve) => setTimeout(() => resolve(new Response(
              JSON.stringify({error: 'the older request failed'}), {status: 422})), 4000));
        }
        return real(url, options);
      }; }""")
  page.set_input_files('#file', str(photos / 'group.jpg'))  # The first request: its error comes 4 s late.
  page.select_option('#pitch', '61')  # The second (a new pitch, while the first is pending): answered at once.
  page.wait_for_selector('#faces li audio', timeout=60_000)
  page.wait_for_timeout(5000)
  assert page.locator('#faces li').count() == 3 and 'older request' not in page.inner_text('#message')
  assert 'C#4' in page.inner_text('#message')


def test_a_melody_is_played_by_every_face(page, photos):
  page.fill('#melody', 'C4 E4 G4:2')
  page.set_input_files('#file', str(photos / 'group.jpg'))
  page.wait_for_function("document.getElementById('message').textContent.includes('melody')", timeout=60_000)
  durations = page.eval_on_selector_all(
      '#faces audio', """players => Promise.all(players.map(a => a.readyState >= 1 ? a.duration :
          new Promise(r => a.addEventListener('loadedmetadata', () => r(a.duration), {once: true}))))""")
  assert durations == pytest.approx([2.0] * 3, abs=0.02)  # 4 beats at 120 bpm.


def _upload(url: str, data: bytes, **fields) -> tuple[int, dict]:
  response = httpx.post(url + 'api/translate', files={'photo': ('photo.jpg', data)}, data=fields, timeout=120)
  return response.status_code, response.json()


def test_limits_give_clear_answers(server, photos, tmp_path):
  status, answer = _upload(server, b'\0' * 3_000_000)
  assert status == 413 and 'larger than 2 MB' in answer['error']
  # A decompression bomb: a PNG of a few kB that decodes to 400 megapixels.
  Image.new('1', (20000, 20000)).save(tmp_path / 'bomb.png')
  status, answer = _upload(server, (tmp_path / 'bomb.png').read_bytes())
  assert status == 400 and 'megapixels' in answer['error']
  status, answer = _upload(server, (photos / 'group.jpg').read_bytes(), pitch='C9')
  assert status == 400 and 'outside the range' in answer['error']
  status, answer = _upload(server, (photos / 'group.jpg').read_bytes(), pitch='60')
  assert status == 200 and len(answer['faces']) == 3


def test_too_many_faces_and_busy_are_refused_with_a_message(tmp_path):
  model = translator_lib.Translator.load()
  face = skimage_data.astronaut()[20:260, 120:340]
  data = tmp_path / 'four.jpg'
  Image.fromarray(np.concatenate([face] * 4, axis=1)).save(data)
  embedded = []  # A crowd is refused once its faces are found, before any is embedded.
  embed_chips = model.embedder._embed_chips  # pylint: disable=protected-access
  model.embedder._embed_chips = lambda chips: embedded.append(len(chips)) or embed_chips(chips)
  with pytest.raises(serve.RequestError, match='4 faces found; this page translates at most 3'):
    serve.translate_upload(model, data.read_bytes(), '60', '', serve.Limits(max_faces=3))
  assert not embedded
  serve.translate_upload(model, data.read_bytes(), '60', '', serve.Limits(max_faces=4))
  assert embedded == [4]
  model.embedder._embed_chips = embed_chips
  for melody, message in (('R R', 'has no note'), ('C4:100', 'lasts 50 s, longer than the 30 s allowed')):
    with pytest.raises(serve.RequestError, match=message):
      serve.translate_upload(model, data.read_bytes(), '60', melody, serve.Limits())
  from starlette.testclient import TestClient  # pylint: disable=import-outside-toplevel
  client = TestClient(serve.make_app(model, serve.Limits(max_concurrent=1)))
  import threading  # pylint: disable=import-outside-toplevel
  started, release = threading.Event(), threading.Event()
  original = serve.translate_upload

  def slow(*args):
    started.set()
    release.wait(30)
    return original(*args)

  serve.translate_upload = slow
  try:
    first = threading.Thread(
        target=lambda: client.post('/api/translate', files={'photo': ('a.jpg', data.read_bytes())}))
    first.start()
    assert started.wait(30)
    busy = client.post('/api/translate', files={'photo': ('b.jpg', data.read_bytes())})
    assert busy.status_code == 503 and 'busy' in busy.json()['error']
    release.set()
    first.join(60)
  finally:
    serve.translate_upload = original
