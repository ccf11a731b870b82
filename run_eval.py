"""`python run_eval.py ...` from the repository root: the same as `face2music eval ...` (face2music_jax/apps/eval.py)."""

from face2music_jax.apps import eval

if __name__ == '__main__':
  eval.run()
