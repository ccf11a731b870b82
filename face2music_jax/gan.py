"""The GAN that training, evaluation and translation share: its state, its networks, and G for inference.

`TrainState` is everything that changes during training (saved whole in each checkpoint); `Models` holds the
config's networks and optimisers. Evaluation and translation need the generator alone: `restore_generator` reads
G's variables from the latest checkpoint without building or reading the discriminators and optimiser states, and
`make_generate` is G in eval mode, jitted, as every caller runs it.
"""

import os
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from face2music_jax import checkpoint
from face2music_jax import parallel
from face2music_jax import workdir as workdir_lib
from face2music_jax.models import audio_embedding as embedding_lib
from face2music_jax.models import discriminator as d_lib
from face2music_jax.models import generator as g_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during GAN training. Variables are flax collections ({'params': ..., ...})."""
  step: jax.Array
  g: dict[str, Any]
  d: dict[str, Any]
  aux: dict[str, Any]
  g_opt: Any
  d_opt: Any
  aux_opt: Any
  skipped: jax.Array  # Updates dropped because a loss or gradient was not finite (config.train.nonfinite='skip').
  # G's variables with its parameters averaged over the steps (config.train.g_ema_decay; {} without): what
  # evaluation, translation and export read.
  g_ema: dict[str, Any] = flax.struct.field(default_factory=dict)


def init_generator(generator: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array) -> dict[str, Any]:
  """Fresh generator variables {'params', ...}: rng is a key for G's initialisation."""
  return g_lib.init_variables(generator, config.data.embedding_dim, rng)


class Models:
  """The config's networks and optimisers (static: they hold no arrays)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.g = g_lib.make_generator(config)
    self.d = d_lib.make_discriminator(config)
    self.aux = d_lib.make_aux_discriminator(config) if config.train.use_aux_discriminator else None
    t = config.train
    self.g_tx = optax.adam(t.g_lr, t.adam_b1, t.adam_b2, t.adam_eps)
    self.d_tx = optax.adam(t.d_lr, t.adam_b1, t.adam_b2, t.adam_eps)
    self.aux_tx = optax.adam(t.aux_lr, t.adam_b1, t.adam_b2, t.adam_eps)

  def init(self, rng: jax.Array) -> TrainState:
    """Fresh state: rng is the run's root key."""
    c = self.config
    k_g, k_d, k_a, k_p = jax.random.split(rng, 4)
    pitch = jnp.zeros((2,), jnp.int32)
    audio = jnp.zeros((2, c.audio.length), jnp.float32)
    g = init_generator(self.g, c, k_g)
    d = dict(self.d.init({'params': k_d, 'phase_shuffle': k_p}, audio, pitch, train=False))
    aux = dict(
        self.aux.init(k_a, jnp.zeros((self.aux.pack, embedding_lib.phi_dim(c))), jnp.zeros(
            (self.aux.pack,), jnp.int32))) if self.aux else {}
    return TrainState(step=jnp.zeros((), jnp.int32), g=g, d=d, aux=aux, g_opt=self.g_tx.init(g['params']),
                      d_opt=self.d_tx.init(d['params']), aux_opt=self.aux_tx.init(aux['params']) if aux else {},
                      skipped=jnp.zeros((), jnp.int32), g_ema=g if c.train.g_ema_decay > 0 else {})

  def generate(self, g_vars: dict[str, Any], z: jax.Array, pitch: jax.Array, train: bool):
    """G(f(x), pitch): [B, E], [B] -> audio [B, L] and the updated non-parameter collections."""
    others = [k for k in g_vars if k != 'params']
    if train and others:
      return self.g.apply(g_vars, z, pitch, train=True, mutable=others)
    return self.g.apply(g_vars, z, pitch, train=train), {k: g_vars[k] for k in others}

  def discriminate(self, d_vars: dict[str, Any], audio: jax.Array, pitch: jax.Array, rng: jax.Array):
    """D(y, pitch) in training mode (phase shuffle, spectral-norm power iteration).

    Returns:
      (logits [B], pitch logits [B, P] or None without the pitch head, updated non-parameter collections).
    """
    others = [k for k in d_vars if k != 'params']
    rngs = {'phase_shuffle': rng}
    if others:
      out, new = self.d.apply(d_vars, audio, pitch, train=True, rngs=rngs, mutable=others)
    else:
      out, new = self.d.apply(d_vars, audio, pitch, train=True, rngs=rngs), {}
    logits, pitch_logits = out if isinstance(out, tuple) else (out, None)
    return logits, pitch_logits, new


def make_generate(generator: nn.Module) -> Callable[[dict[str, Any], jax.Array, jax.Array], jax.Array]:
  """G in eval mode (batch norm on its running statistics), jitted.

  The variables are an argument rather than constants of the compiled function, so that training's sample writing
  compiles once for the variables of all its steps.

  Returns:
    generate(g_vars, z, pitch): generator variables, face embeddings f(x) [B, E] float32, pitch classes [B]
    int32 (`config_lib.pitch_class`: MIDI pitch - config.audio.pitch_min) -> audio [B, config.audio.length] float32.
  """
  return jax.jit(lambda g_vars, z, pitch: generator.apply(g_vars, z, pitch, train=False))


def generator_entry(config: ml_collections.ConfigDict) -> str:
  """The entry of the GAN's state that holds the generator to use: 'g_ema' with an average of G
  (config.train.g_ema_decay > 0), else 'g'."""
  return 'g_ema' if config.train.g_ema_decay > 0 else 'g'


def restore_generator(config: ml_collections.ConfigDict, workdir: str,
                      step: int | None = None) -> tuple[nn.Module, dict[str, Any], int]:
  """The generator of `config` and its variables at the newest GAN checkpoint of `workdir` that verifies (or at
  checkpoint `step`), read alone.

  Only the checkpoint's 'g' entry is read ('g_ema', G's averaged variables, where config.train.g_ema_decay > 0),
  and compared with the checksums saved with it; the variables are
  replicated over a mesh of all devices. A checkpoint that does not load or verify is reported and the previous
  one is used (it is left where it is: training sets it aside when it next runs, and a run may be saving now). A
  checkpoint that lacks its checksums although the run's identity (run.json) says it was written with them is
  such a checkpoint too: damaged metadata is never read as "unverified".

  A named `step` is that checkpoint or an error: no other is used in its place.

  Returns:
    (generator, generator variables {'params', 'batch_stats'}, checkpoint step).

  Raises:
    checkpoint.CheckpointError: no checkpoint, none that verifies, one written with another config, or no
      checkpoint `step` (the message lists those kept).
  """
  directory = os.path.join(workdir, 'checkpoints')
  manager = checkpoint.reader(directory)
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise checkpoint.CheckpointError(f'No GAN checkpoint in {directory}: train first, e.g. python run_train.py '
                                     f'--config=configs/{config.name}.py:{config.size} --workdir={workdir}')
  if step is not None:
    if step not in steps:
      raise checkpoint.CheckpointError(f'No GAN checkpoint of step {step} in {directory}: it keeps steps '
                                       f'{", ".join(str(s) for s in sorted(steps))} (config.train.keep_checkpoints).')
    steps = [step]
  verified_from = workdir_lib.verified_from(workdir)
  generator = g_lib.make_generator(config)
  shapes = jax.eval_shape(lambda: init_generator(generator, config, jax.random.key(0)))
  replicated = parallel.replicated(parallel.make_mesh())
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)
  problems = []
  for candidate in steps:
    try:
      g_vars = checkpoint.restore_entry(manager, candidate, generator_entry(config), like, verified_from)
    except checkpoint.CorruptCheckpointError as e:
      if step is not None:
        raise checkpoint.CheckpointError(str(e)) from e
      logging.error('%s Trying the previous checkpoint.', e)
      problems.append(str(e))
      continue
    if problems:
      logging.warning(
          'Using the checkpoint at step %d: the newer ones of %s are corrupt (rerun training to set them '
          'aside and retrain).', candidate, directory)
    return generator, g_vars, candidate
  raise checkpoint.CheckpointError(f'No GAN checkpoint in {directory} verifies: ' + ' '.join(problems))


def to_host(tree: Any) -> Any:
  """Replicated global arrays -> numpy (works on every process of a multi-host run)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree)
