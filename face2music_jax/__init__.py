"""face2music_jax: translate images of faces into musical notes, so that faces that look alike sound alike."""
