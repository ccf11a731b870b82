"""`python run_train.py ...` from the repository root: the same as `face2music train ...` (face2music_jax/apps/train.py)."""

from face2music_jax.apps import train

if __name__ == '__main__':
  train.run()
