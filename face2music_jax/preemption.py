"""SIGTERM (a preemption, a scheduler's stop) and SIGINT (Ctrl-C): a run asked to stop saves what it can and ends
with EXIT_CODE. Both signals are handled alike; the messages below say SIGTERM for either.

From the moment `handling_sigterm()` is entered (the first thing `run_train.py` and `train.train` do), SIGTERM
raises `Preempted` at once, in the prerequisite stages or while the model is built: nothing there needs saving
(each stage's artefact is written whole or not at all). Inside `Handler.deferred()` (the GAN's training loop) it
only sets a flag, which the loop checks after each step, so that it saves a checkpoint and then raises `Preempted`.
The exception can be lost where library code swallows every exception around the point where the main thread was
(bare `except:` blocks exist in JAX's compile path), or where the signal arrives inside a garbage-collection callback
(JAX's `_xla_gc_callback`), whose exceptions Python reports as unraisable and drops; so the loops of the stages and
of evaluation also `check()` after each step: a stop whose exception was lost is raised again there. While the
handler is installed, a dropped `Preempted` is logged in one line instead of Python's "Exception ignored" traceback.
A command stopped so exits with EXIT_CODE, which tells a finished run (0) from a stopped one. Evaluation and
translation stop at once the same way: their outputs are written whole or not at all (files.building, files.staged).
"""

import contextlib
import signal
import sys
from collections.abc import Iterator

from absl import logging

# The exit code of a run that SIGTERM stopped before its last step (1 and 2 are errors: face2music_jax.cli).
EXIT_CODE = 3


class Preempted(KeyboardInterrupt):
  """SIGTERM stopped the run before its last step; the message says what was saved and that a rerun resumes.

  A KeyboardInterrupt, as Ctrl-C's own: the signal handler raises it wherever the main thread is, also inside
  library code that catches `Exception` (Orbax's restore turns any Exception into "cannot read", which would have
  set an intact checkpoint aside as corrupt; a future's callback logs and drops it; asyncio's loop re-raises only
  SystemExit and KeyboardInterrupt).
  """


# What a stop outside the training loop means, for the message of `Preempted`.
BEFORE_TRAINING = ('before training started: stopped. What was complete is kept (the stages write their artefacts '
                   'whole); rerun the command to go on.')


class Handler:
  """The SIGTERM handler while installed; see the module docstring.

  Attributes:
    requested: a stop was asked for.
    stopped: what a stop outside `deferred()` means, after '<signal> received ' (e.g. what was kept).
  """

  def __init__(self, stopped: str = BEFORE_TRAINING):
    self.requested = False
    self.stopped = stopped
    self._deferred = False

  def __call__(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self._deferred:
      if not self.requested and self._deferred != 'library':
        logging.warning('%s received: saving a checkpoint and exiting.', name)
      self.requested = True
      return
    self.requested = True
    logging.warning('%s received: stopping.', name)
    raise Preempted(f'{name} received {self.stopped}')

  @contextlib.contextmanager
  def deferred(self) -> Iterator[None]:
    """Inside, SIGTERM only sets `requested`; a SIGTERM received before this block raises at its start."""
    if self.requested:
      raise Preempted('SIGTERM received before training started: stopped; rerun the command to go on.')
    self._deferred = True
    try:
      yield
    finally:
      self._deferred = False


@contextlib.contextmanager
def handling_sigterm(stopped: str = BEFORE_TRAINING) -> Iterator[Handler]:
  """Installs a `Handler` for SIGTERM and SIGINT (from the main thread) for the duration, then restores the previous
  ones. `stopped`: what a stop means, for its message (the commands that do not train say what they kept)."""
  handler = Handler(stopped)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  previous_hook = sys.unraisablehook

  def unraisable(args) -> None:
    if issubclass(args.exc_type, Preempted):
      logging.info('The stop arrived where Python drops exceptions (%s); the work stops after its current step.',
                   getattr(args.object, '__qualname__', args.object))
    else:
      previous_hook(args)

  sys.unraisablehook = unraisable
  try:
    yield handler
  finally:
    sys.unraisablehook = previous_hook
    for s, old in previous.items():
      signal.signal(s, old)


@contextlib.contextmanager
def deferred_in_library() -> Iterator[None]:
  """A block of library code that may drop a signal's exception (Orbax's restore: its threads and futures): the
  installed handler (if any, and not deferred already) only records a stop inside, and `Preempted` is raised when
  the block ends."""
  handler = signal.getsignal(signal.SIGTERM)
  if not isinstance(handler, Handler) or handler._deferred:  # pylint: disable=protected-access
    yield
    return
  requested_before = handler.requested
  handler._deferred = 'library'  # pylint: disable=protected-access
  try:
    yield
  finally:
    handler._deferred = False  # pylint: disable=protected-access
  if handler.requested and not requested_before:
    raise Preempted(f'SIGTERM received {handler.stopped}')


def stop_behind(error: BaseException) -> Preempted | None:
  """The `Preempted` that `error` is or that led to it, else None.

  A stop can arrive inside library code that turns the handler's exception into its own: a C extension's module
  initialisation (pybind11's `ImportError: initialization failed`, raised from the `Preempted`, when SIGTERM lands
  while TensorFlow is imported) or a library's wrapper error; such an error has the stop in its `__cause__` /
  `__context__` chain and is the stop, not a failure. (Where the library swallows the error instead, `check()`
  raises the stop after the current step.) A stop inside `deferred()` only sets `requested`, so an error while the
  loop saves is reported as itself.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, Preempted):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def check() -> None:
  """Raises `Preempted` when a stop was asked for outside a deferred block and its exception did not end the work
  (the handler's raise was swallowed by library code); a no-op otherwise. Loops call it after each step."""
  handler = signal.getsignal(signal.SIGTERM)
  if isinstance(handler, Handler) and handler.requested and not handler._deferred:  # pylint: disable=protected-access
    raise Preempted(f'SIGTERM received {handler.stopped}')
