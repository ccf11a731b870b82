"""SIGTERM: stops a run at once before training, and after the current step (and a save) inside the loop."""

import gc
import os
import signal
import sys
import time

import jax
import numpy as np
import pytest

from face2music_jax import loops
from face2music_jax import preemption


def test_sigterm_before_training_stops_at_once_and_inside_the_loop_only_asks_to_stop():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.handling_sigterm() as sigterm:
    with pytest.raises(preemption.Preempted, match='before training started'):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # The handler raises at once: the sleep is cut short.
    sigterm.requested = False
    with sigterm.deferred():
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.1)
      assert sigterm.requested
  assert signal.getsignal(signal.SIGTERM) is previous


def test_a_sigterm_received_before_the_loop_stops_it_at_its_start():
  with preemption.handling_sigterm() as sigterm:
    sigterm.requested = True
    with pytest.raises(preemption.Preempted):
      with sigterm.deferred():
        pytest.fail('The loop ran.')


def test_ctrl_c_is_handled_as_sigterm():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.handling_sigterm() as handler:
    with pytest.raises(preemption.Preempted, match='SIGINT received before training started'):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
    handler.requested = False
    with handler.deferred():
      os.kill(os.getpid(), signal.SIGINT)  # Inside the loop: a request to save and stop, not a KeyboardInterrupt.
      time.sleep(0.1)
      assert handler.requested
  assert signal.getsignal(signal.SIGINT) is previous


def _stopped_inside_code_that_swallows_every_exception() -> None:
  """A stop while library code such as JAX's compile path (`except:`) runs: its exception is lost."""
  try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
  except:  # noqa: E722  pylint: disable=bare-except
    pass


def test_a_stop_whose_exception_library_code_swallowed_ends_the_stage_loop_after_its_step():
  steps = []

  def loss_fn(params, batch):
    steps.append(1)
    return ((params - batch['x'])**2).mean()

  with preemption.handling_sigterm():
    _stopped_inside_code_that_swallows_every_exception()
    with pytest.raises(preemption.Preempted, match='before training started'):
      loops.fit(loss_fn, np.zeros(3, np.float32), {'x': np.ones((4, 3), np.float32)}, steps=100, batch_size=2, lr=0.1,
                seed=0, name='stage')
    with pytest.raises(preemption.Preempted):
      loops.batched(jax.jit(lambda x: x + 1), np.ones((4, 3), np.float32), batch_size=2)
  preemption.check()  # No handler installed: nothing to stop.


def test_a_stop_inside_a_garbage_collection_callback_prints_no_traceback_and_the_next_check_raises(capfd, monkeypatch):
  # JAX's `_xla_gc_callback` is such a callback: Python drops its exceptions with an "Exception ignored" traceback
  # (a SIGTERM during evaluation printed one, from a test in the suite).
  def callback(phase, info):
    del info
    if phase == 'start':
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # The handler runs here.

  # Earlier tests' garbage is collected first, under pytest's hook: an unfinished coroutine of Orbax from a test that
  # read a damaged checkpoint, collected in the collection below, printed its own "Exception ignored" here once.
  gc.collect()
  capfd.readouterr()
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)  # Python's own (pytest's only warns).
  hook = sys.unraisablehook
  with preemption.handling_sigterm():
    gc.callbacks.append(callback)
    try:
      gc.collect()
    finally:
      gc.callbacks.remove(callback)
    with pytest.raises(preemption.Preempted):
      preemption.check()
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Exception ignored' not in err, err
  assert sys.unraisablehook is hook


def test_the_stop_behind_an_error_is_found_through_its_chain_and_an_unrelated_error_has_none():
  stop = preemption.Preempted('SIGTERM received')
  assert preemption.stop_behind(stop) is stop
  try:
    try:
      raise stop
    except preemption.Preempted as e:
      raise ImportError('initialization failed') from e
  except ImportError as wrapped:
    assert preemption.stop_behind(wrapped) is stop
    try:
      raise ValueError('a wrapper of the wrapper')  # Its __context__: the ImportError.
    except ValueError as twice:
      assert preemption.stop_behind(twice) is stop
  unrelated = ValueError('a bug')
  unrelated.__context__ = KeyboardInterrupt()  # Ctrl-C without the handler: not a stop that saved anything.
  assert preemption.stop_behind(unrelated) is None
  looped = ValueError('a')
  looped.__context__ = ValueError('b')
  looped.__context__.__context__ = looped
  assert preemption.stop_behind(looped) is None
