"""The shared defaults of the package's configs (face2music_jax/configs/default.py), for `--config=configs/...`
paths from the repository root."""

from face2music_jax.configs.default import *  # noqa: F401,F403  pylint: disable=wildcard-import
