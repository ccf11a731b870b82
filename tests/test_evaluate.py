"""Evaluation: the whole evaluation of a tiny trained model (metrics JSON with the listening measures, figures, an
HTML page whose images and audio load in headless Chromium)."""

import errno
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from face2music_jax import checkpoint
from face2music_jax import evaluate
from face2music_jax import files
from face2music_jax import metrics
from face2music_jax import plots
from face2music_jax import report
from face2music_jax import workdir as workdir_lib
from tests import helpers

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
METRIC_KEYS = ('pitch_test_accuracy', 'family_test_accuracy', 'fid_pitch', 'fid_family', 'inception_score_pitch',
               'inception_score_family', 'inception_score_pitch_real', 'inception_score_family_real',
               'inception_score_pitch_max', 'inception_score_family_max', 'pearson_correlation', 'pearson_mfcc',
               'pearson_correlation_random_pitch', 'pearson_random_pitch_p_value', 'silhouette_value', 'in_tune_50c',
               'flatness_median', 'distinctness', 'effective_families', 'largest_family_share',
               'effective_families_classifier', 'largest_family_share_classifier', 'pure_tones', 'pure_tones_real',
               'end_db_max', 'effective_families_classifier_held_out', 'largest_family_share_classifier_held_out')


@pytest.fixture(scope='module')
def trained(tiny_data_dir, trained_tiny_workdir, tmp_path_factory):
  """The shared tiny aux model (conftest: trained for its 4 steps), in a work directory of its own, evaluated."""
  config = helpers.tiny_config('aux')
  config.data_dir = tiny_data_dir
  workdir = str(tmp_path_factory.mktemp('eval') / 'workdir')
  shutil.copytree(trained_tiny_workdir, workdir)
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
  assert list(written['seconds']) == [
      'inputs', 'translation', 'audio_metric', 'classifiers_fid_is', 'listening', 'pearson_silhouette', 'figures',
      'examples'
  ]
  assert all(v >= 0 for v in written['seconds'].values())
  for key, value in written['metrics'].items():
    if key in ('silhouette_value', 'distinctness') and value is None:  # Defined only when 2+ families were assigned.
      assert sum(c > 0 for c in written['assigned_families'].values()) < 2 and written['notes']
      continue
    assert np.isfinite(value), key
  m = written['metrics']
  assert 1 - 1e-6 <= m['inception_score_pitch'] <= m['inception_score_pitch_max'] == 13
  assert 1 - 1e-6 <= m['inception_score_family'] <= m['inception_score_family_max'] == 4
  assert -1 <= m['pearson_correlation'] <= 1
  # Pearson at one fixed pitch at a time over the held-out faces, averaged over the listening pitches.
  per_pitch = written['pearson_per_pitch']
  assert set(per_pitch) == {'48', '60'}
  assert m['pearson_correlation'] == pytest.approx(np.mean([r for r in per_pitch.values() if r is not None]))
  # The same on the MFCC ruler (librosa's MFCC means of the same translations, pairs of different people).
  mfcc_per_pitch = written['pearson_mfcc_per_pitch']
  assert set(mfcc_per_pitch) == {'48', '60'} and None not in mfcc_per_pitch.values()
  assert m['pearson_mfcc'] == pytest.approx(np.mean(list(mfcc_per_pitch.values())))
  assert -1 <= m['pearson_mfcc'] <= 1
  # Reference rows through the same classifiers: every FID >= 0, every IS within [1, the class count].
  assert set(written['reference_rows']) == {'real_train_notes', 'real_test_notes', 'white_noise', 'harmonic_tone'}
  for row in written['reference_rows'].values():
    assert row['fid_pitch'] >= -1e-6 and row['fid_family'] >= -1e-6
    assert 1 - 1e-6 <= row['inception_score_pitch'] <= 13 and 1 - 1e-6 <= row['inception_score_family'] <= 4
  assert sum(written['assigned_families'].values()) == config.eval.num_translations
  # The families the frozen family classifier names, beside phi's nearest centroids.
  classified = written['classified_families']
  assert list(classified) == list(written['assigned_families'])
  assert sum(classified.values()) == config.eval.num_translations
  assert m['effective_families_classifier'] == pytest.approx(
      metrics.family_distribution(np.repeat(np.arange(len(classified)), list(classified.values())),
                                  list(classified))['effective_number'])
  assert m['largest_family_share_classifier'] == max(classified.values()) / config.eval.num_translations
  # The same over the held-out faces' translations alone (the test faces come first, cycled with the training
  # faces), and 95% intervals over the people drawn, which hold the point figures.
  intervals = written['classified_families_intervals']
  num_faces, num_test = written['num_faces'], written['listening']['num_faces']  # The latter: held-out people.
  assert 0 < intervals['num_translations_held_out'] < config.eval.num_translations
  assert 1 <= m['effective_families_classifier_held_out'] <= len(classified)
  assert 0 < m['largest_family_share_classifier_held_out'] <= 1
  for key, point in (('all', 'effective_families_classifier'), ('held_out', 'effective_families_classifier_held_out')):
    if key == 'held_out' and num_test < 5:
      assert intervals[key] is None
      continue
    low, high = intervals[key]['effective_number']
    assert 1 <= low <= m[point] + 1e-9 and m[point] - 1e-9 <= high <= len(classified)
  assert num_faces > 5 and intervals['all'] is not None
  assigned = written['assigned_families']
  assert m['largest_family_share'] == max(assigned.values()) / config.eval.num_translations
  assert 1 <= m['effective_families'] <= len(assigned)
  for name in ('tsne_audio.png', 'tsne_faces.png', 'faces_by_family.png', 'index.html'):
    assert os.path.getsize(os.path.join(out, name)) > 1000, name
  page = open(os.path.join(out, 'index.html')).read()
  low, high = intervals['all']['effective_number']
  assert f'95% over the people drawn: {low:.2f}-{high:.2f}' in html.unescape(page)
  assert 'Families named by the family classifier, held-out faces alone' in page
  assert (f"of the {intervals['num_translations_held_out']} translations of held-out faces (the rows above count all "
          f"{config.eval.num_translations}" in html.unescape(page))
  wavs = re.findall(r'<audio [^>]*src="([^"]+)"', page)
  examples = [w for w in wavs if w.startswith('audio/')]
  assert len(examples) == min(config.eval.num_page_examples, config.eval.num_translations)
  assert all(os.path.exists(os.path.join(out, w)) and not os.path.isabs(w) for w in wavs)
  # Listening: held-out faces of every test identity at the listening pitches in range (tiny: MIDI 48 and 60),
  # with the reference rows measured the same way.
  listening = written['listening']
  assert listening['pitches'] == [48, 60]
  rows = listening['rows']
  assert set(rows) == {'translations', 'real_test_notes', 'white_noise', 'harmonic_tone'}
  assert rows['translations']['num_clips'] == 2 * listening['num_faces']
  assert rows['real_test_notes']['in_tune_50c'] >= 0.9 and rows['white_noise']['in_tune_50c'] <= 0.2
  assert rows['harmonic_tone']['in_tune_50c'] == 1.0
  assert rows['white_noise']['flatness']['median'] > 100 * rows['real_test_notes']['flatness']['median']
  assert set(rows['translations']['per_pitch']) == {'48', '60'}
  assert m['in_tune_50c'] == rows['translations']['in_tune_50c']
  # Pure tones: none of white noise or of the 10-partial reference tones (fundamental share 0.65); the real notes of
  # the listening pitches counted apart, and the page shows both.
  assert rows['white_noise']['pure_tones'] == 0 and rows['harmonic_tone']['pure_tones'] == 0
  assert rows['harmonic_tone']['fundamental_share']['median'] == pytest.approx(0.655, abs=0.005)
  pure = listening['pure_tones']
  assert set(pure['translations']) == set(pure['real_notes']) == {'48', '60'}
  assert m['pure_tones'] == rows['translations']['pure_tones']
  assert m['pure_tones_real'] == pytest.approx(np.mean(list(pure['real_notes'].values())))
  assert 'Pure tones by pitch' in page
  # Ends: the real notes end in their release, white noise is cut at full level; the translations' loudest ending is
  # the evaluation's end_db_max, on the page as the listening table's column.
  assert rows['real_test_notes']['end_db']['max'] <= -30 and rows['white_noise']['end_db']['max'] > -10
  assert m['end_db_max'] == rows['translations']['end_db']['max'] <= 0
  assert 'loudest end (dB)' in page and 'Loudest end (held-out faces)' in page
  listened = [w for w in wavs if w.startswith('listening/')]
  assert len(listened) == 2 * min(listening['num_identities'], config.eval.listening_faces)  # Every identity.
  assert 'Listening' in page and 'White noise' in page


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
  assert refused.returncode == 2 and 'Error: ' in refused.stderr and 'exists already' in refused.stderr
  before = os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json'))
  done = subprocess.run(command + ['--overwrite'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith('Evaluated aux (tiny) at step 4') and 'in tune' in done.stdout
  assert 'metrics.json' in done.stdout.splitlines()[-1]
  assert os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json')) > before
  empty = os.path.join(os.path.dirname(workdir), 'no_photos')
  os.makedirs(empty, exist_ok=True)
  # A folder without images and a model that does not exist: the folder is checked first, in one line.
  judged = subprocess.run(command + [f'--photos={empty}', f'--model={empty}_model'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert judged.returncode == 2 and 'Traceback' not in judged.stderr, judged.stderr[-3000:]
  assert f'Error: {empty} holds no image' in judged.stderr


def test_an_earlier_checkpoint_is_evaluated_into_its_own_directory_and_the_newest_evaluation_is_kept(trained):
  """--step: the kept checkpoint of that step, evaluated into eval_step<N>/, eval/ untouched; a step that is not
  kept is one error naming those that are; --step with --model is a usage error."""
  config, workdir, summary = trained
  before = os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json'))
  earlier = evaluate.evaluate(config, workdir, step=2)
  assert earlier['checkpoint_step'] == 2 and summary['checkpoint_step'] == 4
  with open(os.path.join(workdir, 'eval_step2', 'metrics.json'), 'rb') as f:
    assert json.loads(f.read())['checkpoint_step'] == 2
  assert os.path.getmtime(os.path.join(workdir, 'eval', 'metrics.json')) == before
  text = evaluate.human_summary(earlier, evaluate.eval_dir(workdir, 2))
  assert text.startswith('Evaluated aux (tiny) at step 2') and os.path.join(workdir, 'eval_step2') in text
  mfcc_ruler = earlier['metrics']['pearson_mfcc']
  assert f"(MFCC ruler {'n/a' if mfcc_ruler is None else format(mfcc_ruler, '.2f')})" in text
  held_out = earlier['metrics']['effective_families_classifier_held_out']
  assert f"the held-out faces' alone {format(held_out, '.2f')}" in text
  with pytest.raises(evaluate.EvaluationError, match='eval_step2 exists already'):
    evaluate.evaluate(config, workdir, step=2)
  with pytest.raises(checkpoint.CheckpointError, match='No GAN checkpoint of step 3 .* keeps steps 2, 4'):
    evaluate.evaluate(config, workdir, step=3)
  assert not os.path.exists(os.path.join(workdir, 'eval_step3'))
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  refused = subprocess.run([
      sys.executable,
      os.path.join(ROOT, 'run_eval.py'), f'--workdir={workdir}', '--step=2', '--photos=photos', '--model=shipped'
  ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert refused.returncode != 0 and '--step names a checkpoint' in refused.stderr, refused.stderr[-2000:]


def test_a_second_evaluation_at_once_is_refused_and_a_stopped_one_leaves_the_last_one_whole(trained):
  _, workdir, _ = trained
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  command = [sys.executable, os.path.join(ROOT, 'run_eval.py'), f'--workdir={workdir}', '--overwrite']
  metrics = os.path.join(workdir, 'eval', 'metrics.json')
  before = open(metrics).read()
  with workdir_lib.locked(workdir, workdir_lib.EVAL_LOCK_FILE):  # Another evaluation is running.
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert refused.returncode == 2 and 'Traceback' not in refused.stderr, refused.stderr[-3000:]
  assert f'Error: The work directory {workdir} is in use by process {os.getpid()}' in refused.stderr
  log = os.path.join(os.path.dirname(workdir), 'stopped_eval.log')
  with open(log, 'w') as out:  # Without the compilation cache: compiling keeps it busy for tens of seconds.
    proc = subprocess.Popen(command, cwd=ROOT, env={
        **env, 'FACE2MUSIC_COMPILATION_CACHE': '0'
    }, stdout=out, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while 'Config aux (tiny), workdir' not in open(log).read():  # Logged once the handler is installed.
    assert proc.poll() is None and time.time() < deadline, open(log).read()[-3000:]
    time.sleep(0.05)
  time.sleep(1.0)  # Into the evaluation's work.
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 3, open(log).read()[-3000:]
  text = open(log).read()
  assert 'Stopped: SIGTERM received during the evaluation' in text and 'Traceback' not in text, text[-3000:]
  assert open(metrics).read() == before and not os.path.exists(os.path.join(workdir, 'eval.incomplete'))
  assert not os.path.exists(os.path.join(workdir, workdir_lib.EVAL_LOCK_FILE))


def test_a_full_disk_during_evaluation_is_one_error_and_keeps_the_last_evaluation(trained, monkeypatch):
  config, workdir, _ = trained
  metrics = os.path.join(workdir, 'eval', 'metrics.json')
  before = open(metrics).read()

  def full_disk(*args):
    raise OSError(errno.ENOSPC, 'No space left on device', args[3])  # (images, assigned, families, path, ...)

  monkeypatch.setattr(plots, 'face_grid', full_disk)
  with pytest.raises(files.WriteError,
                     match=r'Could not write .*eval\.incomplete/faces_by_family\.png \(is the disk full'):
    evaluate.evaluate(config, workdir, overwrite=True)
  assert open(metrics).read() == before and not os.path.exists(os.path.join(workdir, 'eval.incomplete'))


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


@pytest.mark.skipif(
    CHROMIUM is None, reason='Chromium is not installed (Debian: apt-get install -y chromium); '
    'needed to check that the HTML page loads its images and audio.')
def test_page_loads_its_images_and_audio_in_headless_chromium(trained, tmp_path):
  config, workdir, _ = trained
  out = os.path.join(workdir, 'eval')
  page = open(os.path.join(out, report.PAGE)).read()
  check = os.path.join(out, 'check.html')  # Beside the page, so relative paths resolve the same.
  with open(check, 'w') as f:
    f.write(page.replace('</body>', _CHECK_SCRIPT + '</body>'))
  try:
    result = subprocess.run([
        CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        f'--user-data-dir={tmp_path / "chromium"}', '--autoplay-policy=no-user-gesture-required',
        '--virtual-time-budget=20000', '--dump-dom', f'file://{check}'
    ], capture_output=True, text=True, timeout=180)
  finally:
    os.remove(check)
  found = re.search(r'<pre id="check-result">(.*?)</pre>', result.stdout, re.S)
  assert found, f'No check result in the DOM; Chromium stderr: {result.stderr[-3000:]}'
  loaded = json.loads(html.unescape(found.group(1)))
  num_examples = min(config.eval.num_page_examples, config.eval.num_translations)
  listening = len(re.findall(r'src="listening/face_\d+\.png"', page))  # Held-out faces, one row each.
  num_pitches = len(json.load(open(os.path.join(out, 'metrics.json')))['listening']['pitches'])
  assert listening >= 1
  assert len(loaded['images']) == num_examples + listening + 3  # The faces, the listening faces, 3 figures.
  assert all(i['ok'] for i in loaded['images']), loaded['images']
  assert len(loaded['audio']) == num_examples + listening * num_pitches
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
