"""Progress bars people expect on long work (tqdm): the count, the rate and the time left, on stderr.

Shown on process 0 only; elsewhere (or with FACE2MUSIC_PROGRESS=0) the bar is silent and the log lines remain.
"""

import os
import time

import jax
from tqdm import tqdm


def bar(total: int, desc: str, initial: int = 0, unit: str = 'step') -> tqdm:
  """A progress bar over `total` units starting at `initial` (e.g. a resumed run's step)."""
  disable = jax.process_index() != 0 or os.environ.get('FACE2MUSIC_PROGRESS', '1') == '0'
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0, disable=disable,
              leave=True)


class PhaseTimer:
  """Wall seconds of consecutive phases of a command (where its time goes), in order."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self._last = time.perf_counter()

  def lap(self, phase: str) -> None:
    """Ends `phase` now (the time since the previous lap, added to it if it ran before)."""
    now = time.perf_counter()
    self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 3)
    self._last = now

  def table(self) -> str:
    """The phases as a text table with their shares of the total."""
    total = sum(self.seconds.values()) or 1.0
    width = max([len(p) for p in self.seconds] + [5])
    lines = [f'{"phase":<{width}}  {"seconds":>8}  {"share":>6}']
    lines += [f'{p:<{width}}  {s:8.1f}  {100 * s / total:5.1f}%' for p, s in self.seconds.items()]
    lines.append(f'{"total":<{width}}  {total:8.1f}  100.0%')
    return '\n'.join(lines)
