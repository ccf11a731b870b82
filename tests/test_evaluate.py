"""Evaluation: the metrics on inputs with known answers, and the whole evaluation of a tiny trained model (metrics
JSON, figures, an HTML page whose images and audio load in headless Chromium)."""

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from face2music_jax import checkpoint
from face2music_jax import evaluate
from face2music_jax import report
from face2music_jax import train
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
METRIC_KEYS = ('pitch_test_accuracy', 'family_test_accuracy', 'fid_pitch', 'fid_family', 'inception_score_pitch',
               'inception_score_family', 'inception_score_pitch_real', 'inception_score_family_real',
               'inception_score_pitch_max', 'inception_score_family_max', 'pearson_correlation', 'pearson_p_value',
               'silhouette_value')


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
  x = np.random.default_rng(0).normal(size=(500, 8))
  assert abs(evaluate.frechet_distance(x, x)) < 1e-6
  fids = [evaluate.frechet_distance(x, x + shift) for shift in (0.1, 0.5, 1.0, 2.0)]
  assert all(a < b for a, b in zip(fids, fids[1:]))
  np.testing.assert_allclose(fids, [8 * s ** 2 for s in (0.1, 0.5, 1.0, 2.0)], rtol=1e-6)  # ||mu_a - mu_b||^2.


def test_fid_with_fewer_examples_than_features_is_finite():
  rng = np.random.default_rng(1)
  assert np.isfinite(evaluate.frechet_distance(rng.normal(size=(16, 128)), rng.normal(size=(16, 128))))


def test_inception_score_of_uniform_and_of_confident_even_predictions():
  assert evaluate.inception_score(np.full((40, 5), 0.2)) == pytest.approx(1.0)
  confident = np.eye(5)[np.arange(40) % 5]
  assert evaluate.inception_score(confident) == pytest.approx(5.0)
  assert evaluate.inception_score(np.eye(5)[np.zeros(40, int)]) == pytest.approx(1.0)  # Confident, one class.


def test_pearson_of_identical_distances_is_one():
  x = np.random.default_rng(2).normal(size=(20, 6))
  assert evaluate.distance_correlation(x, x)[0] == pytest.approx(1.0)
  assert evaluate.distance_correlation(x, 3 * x + 1)[0] == pytest.approx(1.0)  # Distances scale by 3.
  assert np.isnan(evaluate.distance_correlation(x, np.ones((20, 3)))[0])  # Undefined: all distances 0.


def test_silhouette_matches_sklearn_and_is_none_when_undefined():
  rng = np.random.default_rng(3)
  labels = np.repeat([0, 1, 2], 10)
  x = rng.normal(size=(30, 4)) + 5 * labels[:, None]
  assert evaluate.silhouette_value(x, labels) == pytest.approx(sk_metrics.silhouette_score(x, labels))
  assert evaluate.silhouette_value(x, labels) > 0.7  # Well separated clusters.
  assert evaluate.silhouette_value(x, np.zeros(30, int)) is None
  assert evaluate.silhouette_value(x, np.arange(30)) is None


def test_nearest_centroid_labels():
  reference = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
  labels = evaluate.nearest_centroid_labels(np.array([[1.0, 1.0], [9.0, 5.0]]), reference, np.array([3, 3, 7, 7]))
  np.testing.assert_array_equal(labels, [3, 7])


@pytest.fixture(scope='module')
def trained(tiny_data_dir, tmp_path_factory):
  """A tiny aux model trained for its 4 steps, then evaluated."""
  config = helpers.tiny_config('aux')
  config.data_dir = tiny_data_dir
  workdir = str(tmp_path_factory.mktemp('eval') / 'workdir')
  train.train(config, workdir)
  summary = evaluate.evaluate(config, workdir)
  return config, workdir, summary


def test_evaluate_writes_metrics_figures_and_page(trained):
  config, workdir, summary = trained
  out = os.path.join(workdir, 'eval')
  with open(os.path.join(out, 'metrics.json')) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(summary))
  assert written['checkpoint_step'] == config.train.num_steps
  assert (written['config_name'], written['config_size']) == ('aux', 'tiny')
  assert written['num_translations'] == config.eval.num_translations and written['seed'] == config.eval.seed
  assert set(written['metrics']) == set(METRIC_KEYS)
  assert list(written['seconds']) == ['inputs', 'translation', 'audio_metric', 'classifiers_fid_is',
                                      'pearson_silhouette', 'figures', 'examples']
  assert all(v >= 0 for v in written['seconds'].values())
  for key, value in written['metrics'].items():
    if key == 'silhouette_value' and value is None:  # Defined only when 2+ families were assigned.
      assert sum(c > 0 for c in written['assigned_families'].values()) < 2 and written['notes']
      continue
    assert np.isfinite(value), key
  m = written['metrics']
  assert 1 - 1e-6 <= m['inception_score_pitch'] <= m['inception_score_pitch_max'] == 13
  assert 1 - 1e-6 <= m['inception_score_family'] <= m['inception_score_family_max'] == 4
  assert -1 <= m['pearson_correlation'] <= 1
  assert sum(written['assigned_families'].values()) == config.eval.num_translations
  for name in ('tsne_audio.png', 'tsne_faces.png', 'faces_by_family.png', 'index.html'):
    assert os.path.getsize(os.path.join(out, name)) > 1000, name
  page = open(os.path.join(out, 'index.html')).read()
  wavs = re.findall(r'<audio [^>]*src="([^"]+)"', page)
  assert len(wavs) == min(config.eval.num_page_examples, config.eval.num_translations)
  assert all(os.path.exists(os.path.join(out, w)) and not os.path.isabs(w) for w in wavs)


def test_evaluate_refuses_to_overwrite_and_needs_a_checkpoint(trained, tmp_path):
  config, workdir, _ = trained
  with pytest.raises(evaluate.EvaluationError, match='--overwrite'):
    evaluate.evaluate(config, workdir)
  with pytest.raises(checkpoint.CheckpointError, match='No GAN checkpoint'):
    evaluate.evaluate(config, str(tmp_path / 'empty'))
  assert not os.path.exists(tmp_path / 'empty' / 'checkpoints')


def test_run_eval_cli_overwrites_only_when_asked(trained):
  _, workdir, _ = trained
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  command = [sys.executable, os.path.join(ROOT, 'run_eval.py'), f'--workdir={workdir}']  # Config from config.json.
  refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert refused.returncode != 0 and 'exists already' in refused.stderr
  before = os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json'))
  done = subprocess.run(command + ['--overwrite'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout)['checkpoint_step'] == 4
  assert os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json')) > before


# Appended to a copy of the page: once loaded, it waits for every <audio> to load its metadata (or fail) and writes
# what loaded into the DOM, which Chromium's --dump-dom prints.
_CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const audios = [...document.querySelectorAll('audio')];
  let tries = 0;
  (function poll() {
    if (!audios.every(a => a.readyState >= 1 || a.error) && ++tries < 100) { setTimeout(poll, 100); return; }
    const result = {
      images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
      audio: audios.map(a => ({src: a.getAttribute('src'), ready: a.readyState, error: a.error && a.error.code,
                               duration: a.duration})),
    };
    const pre = document.createElement('pre');
    pre.id = 'check-result';
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  })();
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed (Debian: apt-get install -y chromium); '
                    'needed to check that the HTML page loads its images and audio.')
def test_page_loads_its_images_and_audio_in_headless_chromium(trained, tmp_path):
  config, workdir, _ = trained
  out = os.path.join(workdir, 'eval')
  page = open(os.path.join(out, report.PAGE)).read()
  check = os.path.join(out, 'check.html')  # Beside the page, so relative paths resolve the same.
  with open(check, 'w') as f:
    f.write(page.replace('</body>', _CHECK_SCRIPT + '</body>'))
  try:
    result = subprocess.run(
        [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         f'--user-data-dir={tmp_path / "chromium"}', '--autoplay-policy=no-user-gesture-required',
         '--virtual-time-budget=20000', '--dump-dom', f'file://{check}'],
        capture_output=True, text=True, timeout=180)
  finally:
    os.remove(check)
  found = re.search(r'<pre id="check-result">(.*?)</pre>', result.stdout, re.S)
  assert found, f'No check result in the DOM; Chromium stderr: {result.stderr[-3000:]}'
  loaded = json.loads(html.unescape(found.group(1)))
  num_examples = min(config.eval.num_page_examples, config.eval.num_translations)
  assert len(loaded['images']) == num_examples + 3  # The faces and the 3 figures.
  assert all(i['ok'] for i in loaded['images']), loaded['images']
  assert len(loaded['audio']) == num_examples
  for audio in loaded['audio']:
    assert audio['error'] is None and audio['ready'] >= 1, audio
    assert audio['duration'] == pytest.approx(config.audio.length / config.audio.sample_rate, abs=1e-3)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only directories')
def test_evaluate_of_a_read_only_workdir_fails_before_any_work(trained, tmp_path):
  config, workdir, _ = trained
  copy = tmp_path / 'workdir'
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('eval'))
  copy.chmod(0o500)
  try:
    with pytest.raises(PermissionError, match=f'The work directory {re.escape(str(copy))} is not writable'):
      evaluate.evaluate(config, str(copy))
  finally:
    copy.chmod(0o700)
