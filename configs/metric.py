"""`--config=configs/metric.py` from the repository root: the `metric` config of the package (face2music_jax/configs/metric.py).

From anywhere, `--config=metric` (or `--config=metric:tiny`) names the same config.
"""

from face2music_jax.configs.metric import get_config  # noqa: F401  pylint: disable=unused-import
