r"""Where users wait: translation's cold start, each further face, and the live page's answers.

  python -m benchmarks.translation                 # the shipped model; JSON to stdout
  python -m benchmarks.translation --model=DIR     # a bundle or a work directory

Sections (keys of the JSON):
  cold_start      a fresh process: import face2music_jax, Translator.load(), translate one face (a generated photo)
                  - with an empty JAX compilation cache and again with the cache the first run left; seconds by phase.
  per_face        a warm Translator on a generated photo of 5 faces: seconds per face (median of repeats),
                  detection and embedding included, and the generator alone per face.
  serve           the live page's server (serve.make_app through Starlette's test client): the first request after
                  start (warm-up included) and a warm request of the 5-face photo, seconds.

Benchmarks time things; they assert nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from skimage import data as skimage_data

_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
from face2music_jax import translator
t1 = time.perf_counter()
model = translator.Translator.load(sys.argv[1] or None)
t2 = time.perf_counter()
faces = model.translate(sys.argv[2], pitch=60)
t3 = time.perf_counter()
print(json.dumps({'import_s': t1 - t0, 'load_s': t2 - t1, 'first_face_s': t3 - t2, 'total_s': t3 - t0,
                  'tensorflow_imported': 'tensorflow' in sys.modules, 'faces': len(faces)}))
"""


def group_photo(path: str, faces: int) -> str:
  """A photo of `faces` copies of the astronaut's head side by side (JPEG)."""
  head = skimage_data.astronaut()[20:260, 120:340]
  Image.fromarray(np.concatenate([head] * faces, axis=1)).save(path, quality=92)
  return path


def cold_start(model: str, photo: str) -> dict:
  out = {}
  with tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, 'FACE2MUSIC_CACHE': cache, 'JAX_PLATFORMS': 'cpu'}
    env.pop('FACE2MUSIC_COMPILATION_CACHE', None)  # The cache root's own: empty, then warm.
    for run in ('empty_cache', 'warm_cache'):
      done = subprocess.run([sys.executable, '-c', _COLD, model, photo], env=env, capture_output=True, text=True,
                            timeout=600, check=True)
      out[run] = json.loads(done.stdout.strip().splitlines()[-1])
  return out


def per_face(model, photo: str, repeats: int) -> dict:
  model.translate(photo)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    faces = model.translate(photo)
    times.append((time.perf_counter() - start) / len(faces))
  z, _ = model.faces(photo)
  model.generate(z, [60] * len(z))
  gen = []
  for _ in range(repeats):
    start = time.perf_counter()
    model.generate(z, [60] * len(z))
    gen.append((time.perf_counter() - start) / len(z))
  return {
      'faces': len(faces),
      'seconds_per_face': float(np.median(times)),
      'generator_seconds_per_face': float(np.median(gen))
  }


def serve_benchmark(model, photo: str, repeats: int) -> dict:
  from starlette.testclient import TestClient  # pylint: disable=import-outside-toplevel

  from face2music_jax import serve  # pylint: disable=import-outside-toplevel
  data = open(photo, 'rb').read()
  start = time.perf_counter()
  serve.warm_up(model)
  client = TestClient(serve.make_app(model))
  answer = client.post('/api/translate', files={'photo': ('p.jpg', data)}, data={'pitch': '60'})
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    answer = client.post('/api/translate', files={'photo': ('p.jpg', data)}, data={'pitch': '60'})
    times.append(time.perf_counter() - start)
  return {'faces': len(answer.json()['faces']), 'first_request_s': first, 'warm_request_s': float(np.median(times))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='', help='A bundle or work directory (default: the shipped model).')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  from face2music_jax import translator  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as root:
    one, five = group_photo(os.path.join(root, 'one.jpg'), 1), group_photo(os.path.join(root, 'five.jpg'), 5)
    results = {'cold_start': cold_start(args.model, one)}
    model = translator.Translator.load(args.model or None)
    results['per_face'] = per_face(model, five, args.repeats)
    results['serve'] = serve_benchmark(model, five, args.repeats)
  print(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()
