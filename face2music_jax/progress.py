"""Progress bars people expect on long work (tqdm): the count, the rate and the time left, on stderr.

Shown on process 0 only; elsewhere (or with FACE2MUSIC_PROGRESS=0) the bar is silent and the log lines remain.
"""

import os

import jax
from tqdm import tqdm


def bar(total: int, desc: str, initial: int = 0, unit: str = 'step') -> tqdm:
  """A progress bar over `total` units starting at `initial` (e.g. a resumed run's step)."""
  disable = jax.process_index() != 0 or os.environ.get('FACE2MUSIC_PROGRESS', '1') == '0'
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0, disable=disable,
              leave=True)
