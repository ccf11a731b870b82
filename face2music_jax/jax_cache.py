"""JAX's persistent compilation cache, for every command: a step, a generator or an evaluation compiled once is
loaded from disk by later runs of the same shapes (a resumed run, the next seed of an experiment, translation).

The cache lives in `<cache root>/jax_cache` ($FACE2MUSIC_CACHE or ~/.cache/face2music_jax), or in the directory
$FACE2MUSIC_COMPILATION_CACHE names (the tests share one between their processes); FACE2MUSIC_COMPILATION_CACHE=0
turns it off.
"""

import os

import jax

from face2music_jax import config_lib

ENV = 'FACE2MUSIC_COMPILATION_CACHE'


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on in `directory` (default: $FACE2MUSIC_COMPILATION_CACHE, else `<cache root>/jax_cache`) for every later compilation of this
  process; returns the directory, or None if it is turned off or cannot be written (which only costs compile
  time)."""
  setting = os.environ.get(ENV, '')
  if setting == '0':
    return None
  directory = directory or setting or os.path.join(config_lib.cache_root(), 'jax_cache')
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory
