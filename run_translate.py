"""`python run_translate.py ...` from the repository root: the same as `face2music translate ...` (face2music_jax/apps/translate.py)."""

from face2music_jax.apps import translate

if __name__ == '__main__':
  translate.run()
