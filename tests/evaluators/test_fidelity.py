"""The fidelity evaluator's classes: what each frozen classifier names for each translation."""

import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax import stages
from face2music_jax.evaluators import fidelity

pytestmark = pytest.mark.slow


def test_the_classified_families_and_pitches_are_each_classifiers_most_likely_class(trained_tiny_workdir):
  config = config_lib.load_config(trained_tiny_workdir)
  classifiers = stages.ensure_classifiers(config, trained_tiny_workdir)
  rng = np.random.default_rng(0)
  real = rng.normal(scale=0.1, size=(6, config.audio.length)).astype(np.float32)
  t = np.arange(config.audio.length) / config.audio.sample_rate
  fake = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (130.8, 261.6, 523.3, 1046.5, 196.0, 392.0)])
  result = fidelity.evaluate(config, classifiers, real, fake.astype(np.float32))
  for kind in fidelity.KINDS:
    probs, _ = fidelity.classify(config, kind, classifiers[kind], fake.astype(np.float32))
    np.testing.assert_array_equal(result['classified'][kind], np.argmax(probs, axis=1), err_msg=kind)
    assert result['classified'][kind].shape == (6,)
  assert result['classified']['family'].max() < config_lib.num_families(config)
