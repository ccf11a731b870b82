"""Config paths of the repository root: thin wrappers of the package's configs (face2music_jax/configs/)."""
