"""Injected faults: SIGKILL at a random moment and during a checkpoint save, a full disk while saving, a flipped bit
in the newest checkpoint, a kill between the final save and its pruning, SIGTERM during a stage, a run of two
processes (which first trains to its end) losing one process to death or a hang, an unwritable work directory.

The kill and disk tests run `run_train.py` in subprocesses (as a user would) on the tiny config for NUM_STEPS
steps, then rerun the same command and compare its final parameters with those of one uninterrupted run that all
of them (and all xdist workers) share. The subprocesses read the tiny data exported to one .npz (no TensorFlow is
imported), share a persistent compilation cache and compile with most optimizations off, and each new work
directory starts with the reference run's prerequisite artefacts (the stages are deterministic), so that a run
takes seconds.
"""

import json
import os
import pathlib
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import filelock
import jax
import numpy as np
import pytest

from face2music_jax import checkpoint
from face2music_jax import preemption
from face2music_jax import train
from tests import helpers
from tests import test_checkpoint

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 8
TMP_SUFFIX = '.orbax-checkpoint-tmp'  # Orbax 0.12's name for a checkpoint being written: <step>.orbax-checkpoint-tmp.


def _shared_dir(tmp_path_factory) -> pathlib.Path:
  """A directory of this test run shared by its xdist workers (the run's own temporary directory without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='module')
def env(tmp_path_factory) -> dict[str, str]:
  """The subprocesses' environment: CPU, fast compiles, one compilation cache for this module's runs."""
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
              JAX_COMPILATION_CACHE_DIR=str(_shared_dir(tmp_path_factory) / 'reliability_jax_cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _command(workdir: str, data: str, *flags: str, num_steps: int = NUM_STEPS, checkpoint_every: int = 1) -> list[str]:
  return [
      sys.executable, 'run_train.py', '--config=configs/aux.py:tiny', f'--workdir={workdir}',
      f'--config.data.exported={data}', f'--config.train.num_steps={num_steps}',
      f'--config.train.checkpoint_every={checkpoint_every}', *flags
  ]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _start(command: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
  """Starts a run whose output goes to the file `log` (a pipe nobody reads could fill and block it)."""
  with open(log, 'w') as f:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait_until(condition, proc: subprocess.Popen, log: str, timeout: float = 300, poll: float = 0.05) -> None:
  deadline = time.time() + timeout
  while not condition():
    assert proc.poll() is None, f'The run ended (exit code {proc.returncode}) first:\n{_tail(log)}'
    assert time.time() < deadline, f'Timed out:\n{_tail(log)}'
    time.sleep(poll)


def _exit_code(proc: subprocess.Popen, timeout: float) -> int | None:
  """The process's exit code, or None (and the process killed) when it still runs after `timeout` seconds, so that
  the failure shows its log rather than a timeout."""
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    return None


def _read(log: str) -> str:
  with open(log) as f:
    return f.read()


def _tail(log: str) -> str:
  return _read(log)[-3000:]


def _metric_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)['step'] for line in f if line.endswith('\n')]


def _checkpoints(workdir: str) -> tuple[list[int], list[str]]:
  """Complete checkpoint steps (sorted) and the names of temporary (partial) checkpoint directories."""
  directory = os.path.join(workdir, 'checkpoints')
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if TMP_SUFFIX in n)


def _final_state(workdir: str) -> list:
  tree = checkpoint.restore_artefact(os.path.join(workdir, 'checkpoints', str(NUM_STEPS), 'default'), verified=False)
  return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.fixture(scope='module')
def reference(tiny_exported, tmp_path_factory, env) -> str:
  """The work directory of one uninterrupted run of NUM_STEPS steps, made once for all xdist workers."""
  root = _shared_dir(tmp_path_factory)
  workdir = str(root / 'reliability_reference')
  with filelock.FileLock(str(root / 'reliability_reference.lock')):
    if not os.path.exists(os.path.join(workdir, 'done')):
      shutil.rmtree(workdir, ignore_errors=True)  # A failed attempt.
      done = _run(_command(workdir, tiny_exported), env)
      assert done.returncode == 0, done.stderr[-3000:]
      assert _metric_steps(workdir) == list(range(1, NUM_STEPS + 1))
      open(os.path.join(workdir, 'done'), 'w').close()
  return workdir


def _new_workdir(tmp_path, reference: str) -> str:
  """A fresh work directory holding the reference run's prerequisite artefacts, so that training starts at once."""
  return helpers.copy_stage_artefacts(reference, str(tmp_path / 'workdir'))


def _assert_finished_like_the_reference(workdir: str, reference: str) -> None:
  """The run reached the final step, logged each step exactly once, left no partial checkpoint, and ended with
  the uninterrupted run's parameters and optimizer states (to 1e-6)."""
  assert _metric_steps(workdir) == list(range(1, NUM_STEPS + 1))
  complete, partial = _checkpoints(workdir)
  assert complete[-1] == NUM_STEPS and not partial, (complete, partial)
  got, expected = _final_state(workdir), _final_state(reference)
  assert [k for k, _ in got] == [k for k, _ in expected]
  for (k, a), (_, b) in zip(got, expected):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(k))


def _assert_resumed_from(rerun: subprocess.CompletedProcess, complete: list[int]) -> None:
  if complete:
    assert f'Resumed from the checkpoint at step {complete[-1]}.' in rerun.stderr, rerun.stderr[-3000:]
  else:
    assert 'Resumed from' not in rerun.stderr


def test_sigkill_at_a_random_moment_then_the_rerun_resumes_from_the_last_complete_checkpoint(
    reference, tiny_exported, env, tmp_path):
  seed = int(os.environ.get('FACE2MUSIC_KILL_SEED', '0'))
  with open(os.path.join(reference, 'metrics.jsonl')) as f:  # The reference's time from its first to last step.
    training = sum(1 / json.loads(line)['steps_per_second'] for line in f.readlines()[1:])
  delay = random.Random(seed).uniform(0.0, 0.9) * training
  workdir = _new_workdir(tmp_path, reference)
  log = str(tmp_path / 'killed.log')
  proc = _start(_command(workdir, tiny_exported), env, log)
  _wait_until(lambda: _metric_steps(workdir), proc, log)
  time.sleep(delay)
  assert proc.poll() is None, f'The run ended within {delay:.2f} s of its first step (seed {seed}).'
  print(f'Killed {delay:.2f} s after the first step ({training:.2f} s in the reference run; seed {seed}).')
  proc.kill()
  assert proc.wait() == -signal.SIGKILL
  complete, _ = _checkpoints(workdir)

  rerun = _run(_command(workdir, tiny_exported), env)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _assert_resumed_from(rerun, complete)
  _assert_finished_like_the_reference(workdir, reference)


def test_sigkill_during_a_checkpoint_save_leaves_a_partial_checkpoint_that_is_never_resumed_from(
    reference, tiny_exported, env, tmp_path):
  workdir = _new_workdir(tmp_path, reference)
  log = str(tmp_path / 'killed.log')
  proc = _start(_command(workdir, tiny_exported), env, log)
  while True:  # Freeze the run while a save is being written, after at least one checkpoint is complete.
    _wait_until(lambda: all(_checkpoints(workdir)), proc, log, poll=0.001)
    proc.send_signal(signal.SIGSTOP)
    if all(_checkpoints(workdir)):  # Still being written: the run is frozen mid-save.
      break
    proc.send_signal(signal.SIGCONT)
  proc.kill()
  assert proc.wait() == -signal.SIGKILL
  complete, partial = _checkpoints(workdir)
  assert partial and int(partial[0].split('.')[0]) > complete[-1], (complete, partial)

  rerun = _run(_command(workdir, tiny_exported), env)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _assert_resumed_from(rerun, complete)
  _assert_finished_like_the_reference(workdir, reference)  # Also: the partial checkpoint was removed.


def test_a_checkpoint_complete_but_for_its_final_rename_is_never_resumed_from(reference, tmp_path):
  directory = tmp_path / 'checkpoints'
  final = os.path.join(reference, 'checkpoints', str(NUM_STEPS))
  shutil.copytree(final, directory / '4')
  # Killed in the last moment of a save: every file and the commit marker written, the rename not done.
  shutil.copytree(final, directory / f'9{TMP_SUFFIX}')
  assert (directory / f'9{TMP_SUFFIX}' / 'commit_success.txt').exists()
  manager = checkpoint.manager(str(directory), keep=3)
  assert manager.latest_step() == 4 and manager.all_steps() == [4]
  saver = checkpoint.Saver(manager)
  saver.save(5, checkpoint.restore_artefact(str(directory / '4' / 'default'), verified=False))
  saver.wait()
  assert sorted(os.listdir(directory)) == ['4', '5']  # The leftover was removed before the first save.


def test_a_kill_after_the_final_save_but_before_its_pruning_leaves_no_extra_checkpoint(
    reference, tiny_exported, env, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns('done'))
  kept = _checkpoints(workdir)[0]
  assert kept[-1] == NUM_STEPS and len(kept) < NUM_STEPS, kept
  # Killed after the final save committed, before Orbax deleted the oldest checkpoint: one too many is left.
  older = kept[0] - 1
  shutil.copytree(os.path.join(workdir, 'checkpoints', str(kept[0])), os.path.join(workdir, 'checkpoints', str(older)))

  rerun = _run(_command(workdir, tiny_exported), env)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _assert_resumed_from(rerun, kept)
  assert f'Deleted the checkpoints of steps [{older}]' in rerun.stderr, rerun.stderr[-3000:]
  assert _checkpoints(workdir) == (kept, [])
  _assert_finished_like_the_reference(workdir, reference)


def test_a_full_disk_while_saving_stops_with_one_clear_error_and_the_rerun_resumes(reference, tiny_exported, env,
                                                                                   tmp_path):
  workdir = _new_workdir(tmp_path, reference)
  first = _run(_command(workdir, tiny_exported, num_steps=4, checkpoint_every=4), env)
  assert first.returncode == 0 and _checkpoints(workdir) == ([4], []), first.stderr[-3000:]
  # The run goes on with a disk that takes no file beyond 100 kB: the metrics, events, sample WAVs (33 kB) and the
  # checkpoint's metadata (52 kB) stay below that; the checkpoint's OCDBT data (about 600 kB, which TensorStore
  # writes as 2-5 files of 36-422 kB, split differently from run to run) does not, so the save of step 8 fails in
  # TensorStore's writes (EFBIG, as ENOSPC would; Python ignores SIGXFSZ). The limit holds from the start of this
  # second run. (A 200 kB limit once let a save whose files were 36-179 kB succeed; a limit set on the running
  # process after its step-4 save once came after the run's end.)
  log = str(tmp_path / 'full.log')
  with open(log, 'w') as f:
    proc = subprocess.Popen(
        _command(workdir, tiny_exported, checkpoint_every=4), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY)))
  assert _exit_code(proc, timeout=300) == 2, _tail(log)  # A known error (face2music_jax.cli).
  out = _read(log)
  # Orbax logs the failed write of each array with a traceback; the run's own error comes once, as one message, and
  # no other. Another thread may print into the same line at the same moment (Orbax's event loop threads at exit:
  # "RuntimeError: Event loop is closed", once split around the message), so the message is found by its words.
  errors = re.findall(r'Error: Could not write the checkpoint[^\n]*', out)
  assert len(errors) == 1, out[-3000:]
  others = [e for e in re.findall(r'(?m)(?:^|(?<= ))(Error: .*)$', out) if e not in errors]
  assert not others, others
  directory = os.path.join(workdir, 'checkpoints')
  assert errors[0].startswith(f'Error: Could not write the checkpoint of step 8 into {directory} (is the disk full'), \
      errors[0]
  assert 'the last complete checkpoint, step 4, is intact' in errors[0] and 'File too large' in errors[0]
  assert _checkpoints(workdir) == ([4], [f'8{TMP_SUFFIX}'])

  rerun = _run(_command(workdir, tiny_exported, checkpoint_every=4), env)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  _assert_resumed_from(rerun, [4])
  _assert_finished_like_the_reference(workdir, reference)


def test_a_flipped_bit_in_the_newest_checkpoint_sets_it_aside_and_the_rerun_resumes_from_the_previous_one(
    reference, tiny_exported, env, tmp_path):
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns('done'))
  newest = os.path.join(workdir, 'checkpoints', str(NUM_STEPS))
  test_checkpoint.flip_one_bit(newest)

  rerun = _run(_command(workdir, tiny_exported), env)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'The checkpoint {newest} is corrupt' in rerun.stderr, rerun.stderr[-3000:]
  assert f'Fell back to the checkpoint at step {NUM_STEPS - 1}' in rerun.stderr, rerun.stderr[-3000:]
  _assert_resumed_from(rerun, [NUM_STEPS - 1])
  aside = [n for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.startswith(f'{NUM_STEPS}.corrupt-')]
  assert len(aside) == 1, os.listdir(os.path.join(workdir, 'checkpoints'))
  _assert_finished_like_the_reference(workdir, reference)


def test_sigterm_during_a_stage_stops_at_once_with_its_own_code_and_keeps_the_finished_stages(
    tiny_exported, env, tmp_path):
  workdir = str(tmp_path / 'workdir')
  log = str(tmp_path / 'stage.log')
  # A long classifier stage, so that the signal surely arrives during it.
  proc = _start(_command(workdir, tiny_exported, '--config.classifiers.num_steps=100000'), env, log)
  _wait_until(lambda: 'Stage classifiers: training' in _read(log), proc, log)
  proc.send_signal(signal.SIGTERM)
  assert _exit_code(proc, timeout=120) == preemption.EXIT_CODE, _tail(log)
  assert 'Stopped: SIGTERM received before training started' in _read(log), _tail(log)
  names = os.listdir(workdir)
  assert 'audio_embedding' in names and 'classifiers' not in names and 'checkpoints' not in names, names
  assert not [n for n in names if 'tmp' in n], names
  # The stage that finished before the signal is whole: its arrays match the checksums written with them.
  checkpoint.restore_artefact(os.path.join(workdir, 'audio_embedding'))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_two_processes(workdir: str, data: str, env: dict[str, str], tmp_path, heartbeat_timeout: int,
                         num_steps: int = 100_000, checkpoint_every: int = 100_000,
                         name: str = 'process') -> tuple[list[subprocess.Popen], list[str]]:
  """Two processes of one run, 2 CPU devices each; their logs are <tmp_path>/<name>_<i>.log."""
  port = _free_port()
  env = dict(env, XLA_FLAGS=helpers.xla_flags('--xla_force_host_platform_device_count=2'))
  logs = [str(tmp_path / f'{name}_{i}.log') for i in range(2)]
  procs = [
      _start(
          _command(workdir, data, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
                   f'--heartbeat_timeout={heartbeat_timeout}', num_steps=num_steps, checkpoint_every=checkpoint_every),
          env, logs[i]) for i in range(2)
  ]
  return procs, logs


def _seconds_to_exit(proc: subprocess.Popen, log: str, timeout: float = 120) -> float:
  start = time.time()
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    pytest.fail(f'Process 0 still runs {timeout:.0f} s after process 1 failed:\n{_tail(log)}')
  return time.time() - start


def test_two_processes_train_together_and_when_one_dies_the_other_exits_with_an_error(
    reference, tiny_exported, env, tmp_path):
  workdir = _new_workdir(tmp_path, reference)
  # Together: a run of two processes (2 devices each) to its end.
  procs, logs = _start_two_processes(workdir, tiny_exported, env, tmp_path, heartbeat_timeout=10, num_steps=4,
                                     checkpoint_every=2, name='together')
  try:
    codes = [_exit_code(p, timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert codes == [0, 0], [_tail(log) for log in logs]
  assert 'Process 1 of 2, 2 local and 4 global devices' in _read(logs[1]), _tail(logs[1])
  lines = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [l['step'] for l in lines] == [1, 2, 3, 4] and all(np.isfinite(l['g_loss']) for l in lines)
  assert _checkpoints(workdir) == ([2, 4], [])
  # Then the run goes on (its compiled step comes from the cache) and one process dies.
  procs, logs = _start_two_processes(workdir, tiny_exported, env, tmp_path, heartbeat_timeout=10)
  try:
    _wait_until(lambda: len(_metric_steps(workdir)) >= 6, procs[0], logs[0], timeout=400)
    procs[1].kill()
    waited = _seconds_to_exit(procs[0], logs[0])
  finally:
    for p in procs:
      p.kill()
      p.wait()
  out = _read(logs[0])
  assert procs[0].returncode == 1, out[-3000:]
  # Its next collective failed (gloo: connection reset or closed by peer), and it exited at once.
  assert 'Resumed from the checkpoint at step 4.' in out, out[-3000:]
  assert 'Process 0 of 2 stopped on an error' in out and 'Gloo' in out, out[-3000:]
  assert waited < 60, f'Process 0 took {waited:.0f} s to exit:\n{out[-3000:]}'


def test_when_one_of_two_processes_hangs_the_other_exits_after_the_heartbeat_timeout(
    reference, tiny_exported, env, tmp_path):
  procs, logs = _start_two_processes(_new_workdir(tmp_path, reference), tiny_exported, env, tmp_path,
                                     heartbeat_timeout=5)
  try:
    _wait_until(lambda: 'Process 1 of 2' in _read(logs[1]), procs[1], logs[1])
    procs[1].send_signal(signal.SIGSTOP)  # Hung: its connections stay open, its heartbeats stop.
    waited = _seconds_to_exit(procs[0], logs[0])
  finally:
    for p in procs:
      p.kill()
      p.wait()
  out = _read(logs[0])
  assert procs[0].returncode != 0, out[-3000:]
  # The coordination service (in process 0) missed task 1's heartbeats and terminated every task.
  assert 'stopped sending heartbeats' in out and 'detected fatal errors' in out, out[-3000:]
  assert waited < 40, f'Process 0 took {waited:.0f} s to exit (--heartbeat_timeout=5; the default is 60).'


def test_an_unwritable_work_directory_fails_at_start_naming_it(tiny_config, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  workdir = str(blocker / 'workdir')
  with pytest.raises(PermissionError, match=f'The work directory {re.escape(workdir)} is not writable'):
    train.train(tiny_config, workdir)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only directories')
def test_a_read_only_work_directory_fails_at_start_naming_it(tiny_config, tmp_path):
  read_only = tmp_path / 'read_only'
  read_only.mkdir()
  read_only.chmod(0o500)
  try:
    for workdir in (str(read_only), str(read_only / 'workdir')):
      with pytest.raises(PermissionError, match=f'The work directory {re.escape(workdir)} is not writable'):
        train.train(tiny_config, workdir)
  finally:
    read_only.chmod(0o700)
