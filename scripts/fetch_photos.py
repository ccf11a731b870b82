r"""Downloads the real-photo evaluation set (scripts/photo_set.tsv) into a folder, each file checked by its sha256.

  python scripts/fetch_photos.py --out=photos/
  face2music eval --workdir=DIR --photos=photos/

The set: 58 colour photos (45 portraits, 13 group photos) from the test and example images of public GitHub
repositories, each pinned to a commit. Most are press, celebrity or dataset photos whose rights are their
photographers' (the `licence` column says what each repository states); they are downloaded for local evaluation
and are not part of this project. A file already present with the right sha256 is kept; a download whose bytes
differ from the manifest's sha256 is an error and is not kept.
"""

import argparse
import csv
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from face2music_jax import files  # pylint: disable=g-import-not-at-top,wrong-import-position

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'photo_set.tsv')
BASE_URL = 'https://raw.githubusercontent.com'
COLUMNS = ('file', 'repository', 'commit', 'path', 'sha256')


class FetchError(RuntimeError):
  """A photo could not be downloaded, or its bytes are not the manifest's."""


def read_manifest(path: str = MANIFEST) -> list[dict[str, str]]:
  """The manifest's rows; raises ValueError naming the file if a column or a value is missing."""
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f, delimiter='\t'))
  if not rows:
    raise ValueError(f'{path} lists no photo.')
  missing = [c for c in COLUMNS if c not in rows[0]]
  if missing:
    raise ValueError(f'{path} lacks the columns {", ".join(missing)}.')
  for k, row in enumerate(rows, start=2):
    if not all(row[c] for c in COLUMNS):
      raise ValueError(f'{path}, line {k}: an empty value in {", ".join(COLUMNS)}.')
    if os.path.basename(row['file']) != row['file'] or row['file'].startswith('.'):
      raise ValueError(f'{path}, line {k}: {row["file"]!r} is not a plain file name.')
  return rows


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def fetch(out_dir: str, rows: list[dict[str, str]], base_url: str = BASE_URL, timeout: float = 60.0) -> list[str]:
  """Downloads every row into `out_dir` (created); returns the paths. Each file appears whole or not at all."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for k, row in enumerate(rows, start=1):
    target = os.path.join(out_dir, row['file'])
    paths.append(target)
    if os.path.exists(target):
      with open(target, 'rb') as f:
        if _sha256(f.read()) == row['sha256']:
          continue
    url = f'{base_url.rstrip("/")}/{row["repository"]}/{row["commit"]}/{row["path"]}'
    try:
      with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      raise FetchError(f'Cannot download {url}: {e}') from e
    if _sha256(data) != row['sha256']:
      raise FetchError(f'{url} has sha256 {_sha256(data)}, the manifest says {row["sha256"]}: not kept.')
    files.write_bytes(target, data)  # Whole or not at all.
    print(f'[{k}/{len(rows)}] {row["file"]}', flush=True)
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('--out', required=True, help='folder for the photos (created)')
  parser.add_argument('--manifest', default=MANIFEST, help='the list of photos (default: scripts/photo_set.tsv)')
  parser.add_argument('--base_url', default=BASE_URL, help='where <repository>/<commit>/<path> are served')
  args = parser.parse_args(argv)
  try:
    paths = fetch(args.out, read_manifest(args.manifest), args.base_url)
  except (FetchError, ValueError, OSError, files.WriteError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  print(f'{len(paths)} photos in {args.out}; judge a model on them: face2music eval --workdir=DIR --photos={args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
