"""`--config=configs/aux.py` from the repository root: the `aux` config of the package (face2music_jax/configs/aux.py).

From anywhere, `--config=aux` (or `--config=aux:tiny`) names the same config.
"""

from face2music_jax.configs.aux import get_config  # noqa: F401  pylint: disable=unused-import
