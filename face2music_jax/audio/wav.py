"""WAV files for listening: 16-bit PCM (every browser and player reads it), clipped to [-1, 1]; or 32-bit float."""

import io

import numpy as np
import soundfile

from face2music_jax import files


def write_wav(path: str, audio: np.ndarray, sample_rate: int, subtype: str = 'PCM_16') -> None:
  """Writes mono audio [T] (float, nominally in [-1, 1]) to `path`, atomically (files.write_bytes).

  Args:
    path: the WAV file.
    audio: the samples.
    sample_rate: Hz.
    subtype: 'PCM_16' (samples beyond full scale are clipped rather than left to wrap around) or 'FLOAT' (32-bit
      floats, unchanged).

  Raises:
    files.WriteError: naming `path`, if it cannot be written (a full disk, or a directory that is not writable).
  """
  audio = np.asarray(audio, np.float32)
  if subtype == 'PCM_16':
    audio = np.clip(audio, -1.0, 1.0)
  encoded = io.BytesIO()  # Encoded in memory, so that the only write that can fail is the file's, named.
  soundfile.write(encoded, audio, sample_rate, subtype=subtype, format='WAV')
  files.write_bytes(path, encoded.getvalue())
