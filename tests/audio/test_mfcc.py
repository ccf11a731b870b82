"""The JAX MFCC against librosa.feature.mfcc, clip by clip, on real instrument notes, noise and silence.

Error measure: per clip, max |jax - librosa| / max |librosa| over all coefficients and frames.
"""

import os

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pretty_midi
import pytest
import tinysoundfont

from face2music_jax.configs import default
from face2music_jax.audio import mfcc as mfcc_lib

SAMPLE_RATE = 16000
LENGTH = 8192
PARAMS = dict(n_mfcc=20, n_fft=1024, hop_length=256, n_mels=64, fmin=0.0, fmax=8000.0)

# Jitted, as the audio metric calls it: one compilation per shape instead of one per operation of an eager call.
jit_mfcc = jax.jit(mfcc_lib.mfcc, static_argnames=('sample_rate', 'top_db', *PARAMS))


def _render(program: int, pitch: int, velocity: int) -> np.ndarray:
  """LENGTH samples of one note from pretty_midi's General MIDI SoundFont; program is 0-based."""
  synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
  sfid = synth.sfload(os.path.join(os.path.dirname(pretty_midi.__file__), 'TimGM6mb.sf2'))
  synth.program_select(0, sfid, 0, program)
  synth.noteon(0, pitch, velocity)
  stereo = np.frombuffer(synth.generate(LENGTH), dtype=np.float32).reshape(LENGTH, 2)
  return stereo.mean(axis=1)


@pytest.fixture(scope='module')
def notes() -> np.ndarray:
  """A violin C4 and a quieter piano C3, [2, LENGTH]."""
  return np.stack([_render(40, 60, 100), _render(0, 48, 60)])


def _librosa_mfcc(clip: np.ndarray, top_db: float | None = 80.0, **params) -> np.ndarray:
  return mfcc_lib.librosa_mfcc(clip, sample_rate=SAMPLE_RATE, top_db=top_db, **{**PARAMS, **params})


def _relative_errors(audio: np.ndarray, top_db: float | None = 80.0, **params) -> list[float]:
  got = np.asarray(jit_mfcc(jnp.asarray(audio), sample_rate=SAMPLE_RATE, top_db=top_db, **{**PARAMS, **params}))
  errors = []
  for clip, ours in zip(audio, got):
    want = _librosa_mfcc(clip, top_db, **params)
    assert ours.shape == want.shape
    errors.append(mfcc_lib.relative_error(ours[None], want[None]))
  return errors


def test_the_reference_is_librosa_feature_mfcc(notes):
  """With the default top_db, librosa.feature.mfcc on the waveform itself gives the reference."""
  direct = librosa.feature.mfcc(y=notes[0], sr=SAMPLE_RATE, htk=False, norm='ortho', **PARAMS)
  np.testing.assert_allclose(_librosa_mfcc(notes[0]), direct, rtol=1e-5, atol=1e-4)


def test_real_notes_match_librosa(notes):
  assert np.max(np.abs(notes)) > 0.05
  assert max(_relative_errors(notes)) < 1e-3


def test_white_noise_matches_librosa():
  noise = np.random.default_rng(0).uniform(-1, 1, (3, LENGTH)).astype(np.float32)
  assert max(_relative_errors(noise)) < 1e-3


def test_silent_and_quiet_batch_matches_librosa_per_clip(notes):
  quiet = 1e-5 * np.random.default_rng(1).standard_normal(LENGTH).astype(np.float32)
  batch = np.stack([np.zeros(LENGTH, np.float32), quiet, notes[0], 1e-3 * notes[1]])
  assert max(_relative_errors(batch)) < 1e-3
  # A batched librosa call floors every clip at the loudest clip's max - 80 dB; ours must not.
  batched = librosa.feature.mfcc(y=batch, sr=SAMPLE_RATE, htk=False, norm='ortho', **PARAMS)
  assert not np.allclose(batched[1], _librosa_mfcc(batch[1]), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('top_db', [40.0, None])
def test_other_top_db_matches_librosa(notes, top_db):
  assert max(_relative_errors(notes, top_db=top_db)) < 1e-3


def test_hop_not_dividing_n_fft_matches_librosa(notes):
  assert max(_relative_errors(notes, hop_length=300, n_fft=1000)) < 1e-3


def test_unbatched_input(notes):
  one = jit_mfcc(jnp.asarray(notes[0]), sample_rate=SAMPLE_RATE, top_db=80.0, **PARAMS)
  both = jit_mfcc(jnp.asarray(notes), sample_rate=SAMPLE_RATE, top_db=80.0, **PARAMS)
  assert one.shape == (20, 1 + LENGTH // 256)
  np.testing.assert_allclose(one, both[0], rtol=1e-6, atol=1e-4)


def test_from_config_jits_and_has_finite_gradients(notes):
  config = default.get_config('tiny')
  quiet = 1e-6 * np.random.default_rng(2).standard_normal(LENGTH).astype(np.float32)
  audio = jnp.asarray(np.stack([np.zeros(LENGTH, np.float32), quiet, notes[0]]))
  features = jax.jit(lambda a: mfcc_lib.mfcc_from_config(a, config))(audio)
  assert features.shape == (3, config.mfcc.n_mfcc, 1 + config.audio.length // config.mfcc.hop_length)
  grad = jax.jit(jax.grad(lambda a: jnp.sum(mfcc_lib.mfcc_from_config(a, config)**2)))(audio)
  assert np.all(np.isfinite(grad))
  assert np.any(grad[2] != 0)


def test_clips_shorter_than_a_frame_hop_ratio_match_librosa(notes):
  """Fewer frames than n_fft / hop_length (here 3 < 4): every phase of the framing is partly empty."""
  assert max(_relative_errors(notes[:, :700])) < 1e-3
