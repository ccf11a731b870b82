"""SIGTERM: stops a run at once before training, and after the current step (and a save) inside the loop."""

import os
import signal
import time

import pytest

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
