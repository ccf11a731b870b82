"""TensorBoard scalar summaries, written without TensorFlow.

The event file is TensorBoard's format (records of `Event` protos) written through the `tensorboard` package's
own record writer and protos, which import neither TensorFlow nor anything heavy: a run writes the same summaries
where TensorFlow is not installed, and a command that does not read TFDS data never imports TensorFlow (about 5 s
on 2 CPU cores). A failed write raises OSError (files.writing names the file); where the `tensorboard` package
itself is missing, `ScalarWriter` raises ImportError (train.py then writes metrics.jsonl alone).
"""

import os
import socket
import time

PATTERN = 'events.out.tfevents.*'


class ScalarWriter:
  """Appends scalars to a new event file in `logdir` (TensorBoard's name for it: events.out.tfevents.<time>.<host>)."""

  def __init__(self, logdir: str):
    # pylint: disable=import-outside-toplevel  (ImportError where the tensorboard package is missing: see above)
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer import record_writer
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}')
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with  (closed by close())
    self._records = record_writer.RecordWriter(self._file)
    self._write(self._event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    values = [self._summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


class NoSummaries:
  """The summary writer of processes other than 0 (and where the tensorboard package is missing)."""

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass
