"""face2music_jax.models."""
