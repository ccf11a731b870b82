"""WAV files for listening: 16-bit PCM (every browser and player reads it), clipped to [-1, 1]."""

import numpy as np
import soundfile


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Writes mono audio [T] (float, nominally in [-1, 1]) as 16-bit PCM; samples beyond full scale are clipped
  rather than left to wrap around."""
  soundfile.write(path, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate, subtype='PCM_16')
