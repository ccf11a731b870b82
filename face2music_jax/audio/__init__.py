"""face2music_jax.audio."""
