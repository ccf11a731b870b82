"""`python run_experiment.py ...` from the repository root: the same as `face2music experiment ...` (face2music_jax/apps/experiment.py)."""

from face2music_jax.apps import experiment

if __name__ == '__main__':
  experiment.run()
