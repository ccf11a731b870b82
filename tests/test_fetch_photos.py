"""scripts/fetch_photos.py: the real-photo set downloaded as a user does, from a local server standing in for GitHub."""

import csv
import functools
import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'fetch_photos.py')
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import fetch_photos  # pylint: disable=g-import-not-at-top,wrong-import-position


def _png(seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (40, 30, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format='PNG')
  return out.getvalue()


@pytest.fixture(name='server')
def _server(tmp_path):
  """A folder served over HTTP on 127.0.0.1 as <repository>/<commit>/<path>; yields (folder, base URL)."""
  served = tmp_path / 'served'
  served.mkdir()

  class Quiet(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):  # pylint: disable=arguments-differ
      pass

  handler = functools.partial(Quiet, directory=str(served))
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield served, f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()
  httpd.server_close()


def _publish(served, tmp_path, tamper: bool = False):
  """Two photos on the server and a manifest listing them; returns (manifest path, {file: bytes})."""
  photos = {'a__b__one.png': _png(0), 'c__d__two.png': _png(1)}
  rows = []
  for k, (name, data) in enumerate(photos.items()):
    repo, commit, path = f'owner{k}/repo', f'{k:040x}', f'tests/images/{name}'
    target = served / repo / commit / path
    target.parent.mkdir(parents=True)
    target.write_bytes(data + b'x' if tamper and k == 1 else data)
    rows.append({
        'file': name,
        'repository': repo,
        'commit': commit,
        'path': path,
        'sha256': hashlib.sha256(data).hexdigest(),
        'licence': 'MIT'
    })
  manifest = tmp_path / 'set.tsv'
  with open(manifest, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter='\t')
    writer.writeheader()
    writer.writerows(rows)
  return manifest, photos


def _run(cwd, *args):
  env = {k: v for k, v in os.environ.items() if k.lower() not in ('http_proxy', 'https_proxy', 'all_proxy')}
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                        check=False, env=env)


def test_downloads_every_photo_and_keeps_those_already_there(server, tmp_path):
  served, url = server
  manifest, photos = _publish(served, tmp_path)
  user = tmp_path / 'fresh'
  user.mkdir()
  done = _run(user, '--out=photos', f'--manifest={manifest}', f'--base_url={url}')
  assert done.returncode == 0, done.stderr
  assert sorted(os.listdir(user / 'photos')) == sorted(photos)
  for name, data in photos.items():
    assert (user / 'photos' / name).read_bytes() == data
  assert '2 photos in photos' in done.stdout
  # A second run downloads nothing: the server may be gone.
  for path in served.rglob('*.png'):
    path.unlink()
  again = _run(user, '--out=photos', f'--manifest={manifest}', f'--base_url={url}')
  assert again.returncode == 0, again.stderr
  assert '[1/2]' not in again.stdout and '[2/2]' not in again.stdout


def test_bytes_that_differ_from_the_manifest_are_an_error_and_not_kept(server, tmp_path):
  served, url = server
  manifest, _ = _publish(served, tmp_path, tamper=True)
  done = _run(tmp_path, '--out=photos', f'--manifest={manifest}', f'--base_url={url}')
  assert done.returncode == 2
  assert re.search(r'^Error: .*c__d__two\.png has sha256 [0-9a-f]{64}, the manifest says', done.stderr, re.M)
  assert os.listdir(tmp_path / 'photos') == ['a__b__one.png']  # The good one stays; nothing partial.


def test_a_missing_photo_is_an_error_naming_its_address(server, tmp_path):
  served, url = server
  manifest, _ = _publish(served, tmp_path)
  for path in served.rglob('*two.png'):
    path.unlink()
  done = _run(tmp_path, '--out=photos', f'--manifest={manifest}', f'--base_url={url}')
  assert done.returncode == 2
  assert f'Error: Cannot download {url}/owner1/repo/' in done.stderr and '404' in done.stderr


def test_the_shipped_manifest_names_58_distinct_pinned_photos():
  rows = fetch_photos.read_manifest()
  assert len(rows) == 58
  assert len({r['file'] for r in rows}) == 58 and len({r['sha256'] for r in rows}) == 58
  for row in rows:
    assert re.fullmatch(r'[0-9a-f]{40}', row['commit']), row
    assert re.fullmatch(r'[0-9a-f]{64}', row['sha256']), row
    assert row['licence'], row


@pytest.mark.parametrize('name', ['../x.jpg', 'a/b.jpg', '.x.jpg'])
def test_a_file_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
  manifest = tmp_path / 'bad.tsv'
  manifest.write_text(f'file\trepository\tcommit\tpath\tsha256\n{name}\to/r\t{"0" * 40}\tp.jpg\t{"0" * 64}\n')
  with pytest.raises(ValueError, match='is not a plain file name'):
    fetch_photos.read_manifest(str(manifest))


def test_a_manifest_without_a_column_is_refused(tmp_path):
  manifest = tmp_path / 'bad.tsv'
  manifest.write_text('file\trepository\nx.jpg\towner/repo\n')
  with pytest.raises(ValueError, match='lacks the columns commit, path, sha256'):
    fetch_photos.read_manifest(str(manifest))
