"""The synthesiser's reach: which families' notes the harmonic synthesiser can write within a config's bounds.

When G's translations rarely land in a family (docs/experiments.md: organ, flute and reed), either the synthesiser
cannot write such notes within the config's bounds (the fundamental's floor, the noise bound, the control frames,
the envelope's ranges, one harmonic distribution per note with `steady_harmonics`) or G's training does not lead it
there. This evaluator tells the two apart: it fits the synthesiser's raw controls to real notes directly, one set of
controls per note, with no network and no face (DDSP's multi-scale spectral loss, Adam), and names the fits' families
with the frozen family classifier, the yardstick of FID-family and of the families `face2music eval` reports. A family
whose fits the classifier names right is within the synthesiser's reach; one it names wrong is not, whatever G learns.

  python scripts/synth_reach.py --workdir=W [--per_family=16] [--steps=600] [--set=model.harmonic.noise_max=1.0]
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from face2music_jax import config_lib
from face2music_jax import loops
from face2music_jax import metrics
from face2music_jax.audio import synthesis
from face2music_jax.evaluators import fidelity

# DDSP's multi-scale spectral loss: frames of these sizes, 75% overlap.
FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def spectral_loss(x: jax.Array, y: jax.Array, fft_sizes: tuple[int, ...] = FFT_SIZES) -> jax.Array:
  """DDSP's multi-scale spectral loss of notes x against y ([B, L] each): summed over the FFT sizes, the mean absolute
  difference of the Hann-windowed magnitude spectra (hop a quarter of the size) plus that of their logs."""
  length = x.shape[-1]
  total = jnp.zeros((), jnp.float32)
  for size in fft_sizes:
    if size > length:
      raise ValueError(f'spectral_loss: an FFT of {size} samples is longer than the notes ({length}).')
    frames = np.arange(0, length - size + 1, size // 4)[:, None] + np.arange(size)[None, :]
    window = np.hanning(size).astype(np.float32)
    mx, my = (jnp.abs(jnp.fft.rfft(a[:, frames] * window, axis=-1)) for a in (x, y))
    total += jnp.mean(jnp.abs(mx - my)) + jnp.mean(jnp.abs(jnp.log(mx + 1e-5) - jnp.log(my + 1e-5)))
  return total


def synthesizer(config: ml_collections.ConfigDict):
  """(raw [B, ...], midi [B]) -> [B, length] notes: the synthesiser of `config`'s harmonic generator after its
  network (models/generator.py: the same floor, noise bound, release and level, the same spectral envelope with
  `envelope_bands`; the controls by `synthesis.controls`)."""
  h, a = config.model.harmonic, config.audio
  pitches = tuple(int(p) for p in h.fundamental_floor_pitches)

  def synthesize(raw: dict[str, jax.Array], midi: jax.Array) -> jax.Array:
    if h.steady_harmonics:  # One distribution per note ([B, 1, K], initial_raw), held over the frames as G does.
      harmonics = raw['harmonics']
      raw = {**raw, 'harmonics': jnp.broadcast_to(harmonics, (harmonics.shape[0], h.frames, harmonics.shape[-1]))}
    if h.envelope_bands:  # Bands of a spectral envelope ([B, F, M]), read at each harmonic as G reads them.
      raw = {
          **raw, 'harmonics':
              synthesis.envelope_at_harmonics(raw['harmonics'], synthesis.midi_to_hz(midi), h.num_harmonics,
                                              float(synthesis.midi_to_hz(float(a.pitch_min))), a.sample_rate / 2)
      }
    floor = synthesis.fundamental_floor(midi, h.fundamental_floor, h.fundamental_floor_high, pitches)
    controls = synthesis.controls(raw, length=a.length, sample_rate=a.sample_rate, noise_max=h.noise_max,
                                  relative_noise=h.relative_noise, fundamental_floor=floor)
    audio = synthesis.synthesize(controls, synthesis.midi_to_hz(midi), a.length, a.sample_rate, a.release_s,
                                 h.max_partial_hz)
    return synthesis.normalize_rms(audio, a.note_rms)

  return synthesize


def initial_raw(config: ml_collections.ConfigDict, batch: int) -> dict[str, jax.Array]:
  """Raw controls of `batch` notes where a fresh HarmonicGenerator's heads start: a quiet note (amplitude -1), flat
  harmonics (one distribution per frame, or per note [batch, 1, K] with steady harmonics; M envelope bands in place
  of the K harmonics with envelope_bands), noise far below them (-5),
  the envelope's mid ranges (0); start phases 0 with learned phases."""
  h = config.model.harmonic
  raw = {
      'amplitude': jnp.full((batch, h.frames, 1), -1.0),
      'harmonics': jnp.zeros((batch, 1 if h.steady_harmonics else h.frames, h.envelope_bands or h.num_harmonics)),
      'noise': jnp.full((batch, h.frames, h.noise_bands), -5.0),
      'envelope': jnp.zeros((batch, 3)),
  }
  if h.learned_phases:
    raw['phases'] = jnp.zeros((batch, h.num_harmonics))
  return raw


def fit(config: ml_collections.ConfigDict, audio: np.ndarray, midi: np.ndarray, *, steps: int,
        learning_rate: float = 0.05, seed: int = 0) -> tuple[np.ndarray, float]:
  """The synthesiser's closest notes to `audio` [N, length] at MIDI pitches `midi` [N]: raw controls per note fitted
  by Adam on `spectral_loss` over all notes at once (loops.fit: progress and Ctrl-C as in training).

  Returns:
    (fits [N, length] float32, the final loss over all notes).

  Raises:
    ValueError: a config without the harmonic generator, or audio and pitches that do not match.
  """
  if config.model.generator != 'harmonic':
    raise ValueError(f"The synthesiser's reach needs model.generator = 'harmonic'; got {config.model.generator!r}.")
  audio, midi = np.asarray(audio, np.float32), np.asarray(midi, np.float32)
  if audio.ndim != 2 or audio.shape[1] != config.audio.length or midi.shape != (len(audio),):
    raise ValueError(f'Expected notes [N, {config.audio.length}] and their MIDI pitches [N]; got {audio.shape} and '
                     f'{midi.shape}.')
  synthesize = synthesizer(config)

  def loss_fn(raw, batch):  # Every note in every batch (batch_size = N), in the sampler's order.
    mine = jax.tree.map(lambda r: r[batch['index']], raw)
    return spectral_loss(synthesize(mine, batch['midi']), batch['audio'])

  arrays = {'audio': audio, 'midi': midi, 'index': np.arange(len(audio), dtype=np.int32)}
  raw = loops.fit(loss_fn, initial_raw(config, len(audio)), arrays, steps=steps, batch_size=len(audio),
                  lr=learning_rate, seed=seed, name='synth_reach')
  synthesize = jax.jit(synthesize)
  fits = np.asarray(synthesize(raw, jnp.asarray(midi)))
  return fits, float(spectral_loss(jnp.asarray(fits), jnp.asarray(audio)))


def evaluate(config: ml_collections.ConfigDict, family_classifier: Any, notes: dict[str, np.ndarray], *,
             per_family: int = 16, steps: int = 600, seed: int = 0) -> dict[str, Any]:
  """The synthesiser's reach over `per_family` real notes of each family (module docstring).

  Args:
    config: the model's config (its harmonic generator's bounds, its audio and its families).
    family_classifier: the frozen family classifier's params (stages.ensure_classifiers(...)['family']).
    notes: real notes: 'audio' [N, length], 'pitch' (pitch classes) and 'family' [N] (data.inputs.Inputs.notes;
      the classifier names its training notes' families near-perfectly, test notes about as its test accuracy).
    per_family: notes drawn per family (all of a family's notes where it has fewer).
    steps: Adam steps of the fit.
    seed: the draw of the notes.

  Returns:
    {'families': {family: {'notes', 'real_named_right', 'fit_named_right', 'fit_named': {family: count}, 'loss'}}
     (only the families the notes hold), 'real_named_right', 'fit_named_right' (over all drawn notes),
     'fit_effective_families' (of the fits' named families), 'loss' (over all), 'per_family', 'steps'}.
  """
  families = config_lib.family_names(config)
  rng = np.random.default_rng(seed)
  index = np.concatenate([
      rng.choice(np.flatnonzero(notes['family'] == f), min(per_family, int(np.sum(notes['family'] == f))),
                 replace=False) for f in range(len(families))
  ])
  if not len(index):
    raise ValueError('The synthesiser\'s reach needs real notes; got none.')
  audio, family = notes['audio'][index], notes['family'][index]
  midi = config_lib.midi_pitch(config, notes['pitch'][index])
  fits, loss = fit(config, audio, midi, steps=steps, seed=seed)
  named_real = fidelity.classify(config, 'family', family_classifier, audio)[0].argmax(axis=1)
  named_fit = fidelity.classify(config, 'family', family_classifier, fits)[0].argmax(axis=1)
  per = {}
  for f, name in enumerate(families):
    mine = family == f
    if mine.any():
      per[name] = {
          'notes': int(mine.sum()),
          'real_named_right': float(np.mean(named_real[mine] == f)),
          'fit_named_right': float(np.mean(named_fit[mine] == f)),
          'fit_named': {
              families[g]: int(c) for g, c in enumerate(np.bincount(named_fit[mine], minlength=len(families))) if c
          },
          'loss': float(spectral_loss(jnp.asarray(fits[mine]), jnp.asarray(audio[mine]))),
      }
  return {
      'families': per,
      'real_named_right': float(np.mean(named_real == family)),
      'fit_named_right': float(np.mean(named_fit == family)),
      'fit_effective_families': metrics.family_distribution(named_fit, families)['effective_number'],
      'loss': loss,
      'per_family': per_family,
      'steps': steps,
  }
