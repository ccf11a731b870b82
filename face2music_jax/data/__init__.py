"""face2music_jax.data."""
