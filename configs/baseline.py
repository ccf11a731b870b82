"""`--config=configs/baseline.py` from the repository root: the `baseline` config of the package (face2music_jax/configs/baseline.py).

From anywhere, `--config=baseline` (or `--config=baseline:tiny`) names the same config.
"""

from face2music_jax.configs.baseline import get_config  # noqa: F401  pylint: disable=unused-import
