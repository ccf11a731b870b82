"""Mixed precision (config.train.dtype = 'bfloat16'): bfloat16 activations, float32 everything that is kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from face2music_jax import config_lib
from face2music_jax import gan
from face2music_jax.models import discriminator as d_lib
from face2music_jax.models import generator as g_lib
from tests import helpers
from tests import test_train_step

# Slow (trains, runs subprocesses or compiles the GAN): outside the fast tier, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

# Losses of order 1 after a few steps. bfloat16 keeps 8 significant bits (a relative rounding of 2**-9 = 0.2% per
# operation); measured at the tiny size, the float32 and bfloat16 losses differ by at most 0.3% over 3 steps.
# 2% relative plus 0.01 absolute (for the logits' means, which are near 0) leaves room for other CPUs' reduction
# orders, and is still far below what a wrong cast does (a bfloat16 waveform or phi moves the metric loss by more).
RTOL, ATOL = 2e-2, 1e-2
_LOSSES = ('d_loss', 'd_pitch_loss', 'g_loss', 'g_adv_loss', 'g_pitch_loss', 'metric_loss', 'aux_d_loss', 'aux_g_loss',
           'd_real_logit', 'd_fake_logit')


def _config(generator: str, dtype: str):
  config = helpers.tiny_config('aux')
  config.model.generator = generator
  config.train.dtype = dtype
  return config_lib.validate(config)


def _dtypes(tree) -> set[str]:
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


@pytest.mark.parametrize('generator', ['wavegan', 'harmonic'])
def test_bfloat16_step_stays_close_to_float32_and_keeps_float32_state(generator):
  steps = 3
  _, reference = test_train_step._run_steps(_config(generator, 'float32'), steps)
  state, history = test_train_step._run_steps(_config(generator, 'bfloat16'), steps)
  for m in history:
    assert m['finite'] == 1.0 and all(np.isfinite(v) for v in m.values()), m
  for key in _LOSSES:
    np.testing.assert_allclose([m[key] for m in history], [m[key] for m in reference], rtol=RTOL, atol=ATOL,
                               err_msg=key)
  # The bfloat16 step really computes differently (the option is not a no-op).
  assert any(m['g_loss'] != r['g_loss'] for m, r in zip(history, reference))
  # Parameters, optimiser states, batch-norm and spectral-norm statistics stay float32.
  kept = (state.g, state.d, state.aux, state.g_opt, state.d_opt, state.aux_opt)
  assert _dtypes(kept) <= {'float32', 'int32'}, _dtypes(kept)
  assert 'float32' in _dtypes(state.d['batch_stats'])


def _intermediates(module, variables, *args, **kwargs):
  # Jitted: one compilation instead of one per operation of the eager forward pass (with the harmonic generator's
  # initialisation below, the test took 38 s alone here eager, 16 s jitted).
  apply = jax.jit(lambda v, *a: module.apply(v, *a, capture_intermediates=True, mutable=['intermediates'], **kwargs))
  out, state = apply(variables, *args)
  flat = jax.tree_util.tree_flatten_with_path(state['intermediates'])[0]
  named = {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): leaf for path, leaf in flat}
  return out, {name: str(x.dtype) for name, x in named.items()}


def _output_dtype(dtypes: dict[str, str], layer: str) -> str:
  """The dtype of `layer`'s __call__ output among the captured intermediates ('<layer>/__call__/0')."""
  return dtypes[f'{layer}/__call__/0']


def test_bfloat16_activations_and_float32_outputs():
  dtype = 'bfloat16'
  config = _config('wavegan', dtype)
  models = gan.Models(config)
  state = jax.jit(models.init)(jax.random.key(0))
  z = jnp.ones((2, config.data.embedding_dim), jnp.float32)
  pitch = jnp.zeros((2,), jnp.int32)

  audio, g_types = _intermediates(models.g, state.g, z, pitch, train=False)
  assert audio.dtype == jnp.float32
  assert _output_dtype(g_types, 'project') == dtype
  assert _output_dtype(g_types, 'upconv0') == dtype
  assert _output_dtype(g_types, 'project_norm') == dtype
  # The output block stays float32.
  assert _output_dtype(g_types, f'upconv{config.model.num_layers - 1}') == 'float32'

  (logits, pitch_logits), d_types = _intermediates(models.d, state.d, audio, pitch, train=False)
  assert logits.dtype == pitch_logits.dtype == jnp.float32
  assert _output_dtype(d_types, 'conv0_sn') == dtype
  assert _output_dtype(d_types, 'linear_sn') == 'float32'

  harmonic = g_lib.make_generator(_config('harmonic', dtype))
  variables = jax.jit(lambda key: gan.init_generator(harmonic, config, key))(jax.random.key(1))
  audio, h_types = _intermediates(harmonic, variables, z, pitch, train=False)
  assert audio.dtype == jnp.float32
  assert _output_dtype(h_types, 'condition0') == dtype
  assert _output_dtype(h_types, 'conv0') == dtype
  assert _output_dtype(h_types, 'harmonics') == 'float32'


def test_dtype_is_validated():
  config = helpers.tiny_config('aux')
  config.train.dtype = 'float16'
  with pytest.raises(ValueError, match='train.dtype'):
    config_lib.validate(config)
  assert d_lib.make_discriminator(helpers.tiny_config('aux')).dtype == jnp.float32
