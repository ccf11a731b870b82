"""The configs: `get_config(arg)` files; `--config=aux` (or `aux:tiny`, `aux:paper`) names one from anywhere.

default.py holds every field and the sizes; baseline.py, metric.py and aux.py flip the paper's loss switches.
"""

import os

# The paper's three models, in the order of its Table 1.
NAMES = ('baseline', 'metric', 'aux')
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of a config name ('aux' -> .../face2music_jax/configs/aux.py)."""
  return os.path.join(DIRECTORY, f'{name}.py')
