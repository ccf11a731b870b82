"""TensorBoard scalars written without TensorFlow (summaries.py), read back by TensorBoard's own reader."""

import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_file_loader

from face2music_jax import summaries


def test_scalars_are_read_back_by_tensorboard_in_order(tmp_path):
  writer = summaries.ScalarWriter(str(tmp_path))
  writer.write_scalars(1, {'train/g_loss': 2.5, 'train/d_loss': 1})
  writer.write_scalars(2, {'train/g_loss': -0.25})
  writer.close()
  writer.close()  # A second close (after an error, say) does nothing.
  assert os.path.basename(writer.path).startswith('events.out.tfevents.')
  # The loader TensorBoard reads with: it migrates each simple value to a scalar tensor of the scalars plugin.
  events = list(event_file_loader.EventFileLoader(writer.path).Load())
  assert events[0].file_version == 'brain.Event:2'
  values = [(e.step, v) for e in events[1:] for v in e.summary.value]
  assert all(v.metadata.plugin_data.plugin_name == 'scalars' for _, v in values)
  got = [(step, v.tag, *v.tensor.float_val) for step, v in values]
  assert got == [(1, 'train/g_loss', 2.5), (1, 'train/d_loss', 1.0), (2, 'train/g_loss', -0.25)]


def test_writing_summaries_imports_no_tensorflow(tmp_path):
  code = ('import sys\nfrom face2music_jax import summaries\n'
          f'w = summaries.ScalarWriter({str(tmp_path)!r}); w.write_scalars(1, {{"a": 1.0}}); w.close()\n'
          'print(sorted(m for m in ("tensorflow", "torch") if m in sys.modules))')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=True)
  assert done.stdout.strip() == '[]', done.stdout


def test_an_unwritable_directory_is_an_os_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(OSError):
    summaries.ScalarWriter(str(tmp_path / 'file' / 'logs'))


@pytest.mark.slow  # A fresh Python process that imports the training module (5-7 s).
def test_without_the_tensorboard_package_training_logs_a_warning_and_writes_no_summaries(tmp_path):
  code = ('import sys\nsys.modules["tensorboard"] = None\nfrom face2music_jax import train\n'
          f'print(type(train._summary_writer({str(tmp_path)!r}, True)).__name__)')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=True)
  assert done.stdout.strip() == 'NoSummaries', done.stderr[-2000:]
  assert 'No TensorBoard summaries' in done.stderr and not os.listdir(tmp_path)
