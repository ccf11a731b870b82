"""`python run_serve.py ...` from the repository root: the same as `face2music serve ...` (face2music_jax/apps/serve.py)."""

from face2music_jax.apps import serve

if __name__ == '__main__':
  serve.run()
