"""Listening: the translations of held-out faces as a listener hears them, with tools the model never trains against.

Every held-out face (up to config.eval.listening_faces, round-robin over identities) is translated at every
listening pitch and measured by audio/listening.py: in tune (librosa's pYIN), voiced, flatness, RMS, the fundamental's
share (pure tones), and distinctness against real instruments; reference rows go through the same measures (the real
test notes, white noise, harmonic tones), and the pure tones are counted among the real notes of each listening pitch.
"""

from typing import Any

import ml_collections
import numpy as np

from face2music_jax import config_lib
from face2music_jax import loops
from face2music_jax.audio import listening
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.data import sampling

# Clips per listening pitch in the white-noise and harmonic-tone reference rows.
_REFERENCE_CLIPS = 8


def evaluate(config: ml_collections.ConfigDict, inputs: inputs_lib.Inputs, generate: Any,
             faces: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
  """The listening measures (audio/listening.py) of translations of held-out faces, with reference rows.

  Every face of `faces` (up to config.eval.listening_faces, round-robin over identities) is translated at every
  pitch of `config_lib.listening_pitches(config)`. The reference rows go through the same measures: the real test
  notes (each at its own pitch), white noise and harmonic tones (10 partials, amplitudes 1/k) at the listening
  pitches. Distinctness compares translations of different identities at one pitch with real notes of that pitch
  (all splits); for the real-notes row it compares pairs of different instruments among those real notes.

  Args:
    config: the model's config.
    inputs: the loader of the config's data (the real notes).
    generate: jitted (z [B, E], pitch class [B]) -> audio [B, length].
    faces: held-out faces: 'embedding' [M, E], 'name' [M].

  Returns:
    (the measures: {'pitches', 'num_faces', 'num_identities', 'rows': {row: summary with 'distinctness'},
     'pure_tones': {'translations', 'real_notes': {midi: the fraction of pure tones at that pitch}} (the real notes
     of all splits at the listening pitches: the share of pure tones rises with the pitch)},
     the translations: {'audio' [P * F, length], 'face_index' [P * F] into `faces`, 'mfcc' [P * F, 20] their MFCC
     means (`listening.mfcc_means`), plus `clip_measures`}).
  """
  sr = config.audio.sample_rate
  pitches = np.asarray(config_lib.listening_pitches(config))
  index = sampling.round_robin_by_identity(faces['name'], config.eval.listening_faces)
  face_index = np.tile(index, len(pitches))
  midi = np.repeat(pitches, len(index))
  audio = loops.batched(generate, faces['embedding'][face_index],
                        config_lib.pitch_class(config, midi).astype(np.int32), batch_size=config.eval.batch_size)
  notes = [inputs.notes(split) for split in ('train', 'valid', 'test')]
  ref_midi = config_lib.midi_pitch(config, np.concatenate([n['pitch'] for n in notes]))
  keep = np.isin(ref_midi, pitches)
  ref_audio, ref_midi = np.concatenate([n['audio'] for n in notes])[keep], ref_midi[keep]

  def row(clips_audio, clips_midi, groups, distinct_audio=None, distinct_midi=None):
    clips = listening.clip_measures(clips_audio, clips_midi, sr)
    summary = listening.summarise(clips)
    if distinct_audio is None:
      distinct_audio, distinct_midi = clips_audio, clips_midi
    summary['distinctness'] = listening.distinctness(distinct_audio, distinct_midi, groups, ref_audio, ref_midi, sr)
    return summary, clips

  rows = {}
  rows['translations'], clips = row(audio, midi, faces['name'][face_index])
  test = notes[2]
  # The real notes' distinctness: pairs of different instruments among the real notes of the listening pitches
  # (the test split alone has too few notes per pitch), against all their pairs: about 1 by construction.
  ref_instrument = np.concatenate([n['instrument'] for n in notes])[keep]
  rows['real_test_notes'], _ = row(test['audio'], config_lib.midi_pitch(config, test['pitch']), ref_instrument,
                                   ref_audio, ref_midi)
  ref_midi_rows = np.repeat(pitches, _REFERENCE_CLIPS)
  noise = listening.white_noise(len(ref_midi_rows), config.audio.length, seed=config.eval.seed)
  rows['white_noise'], _ = row(noise, ref_midi_rows, np.arange(len(ref_midi_rows)))
  tones = listening.harmonic_tone(ref_midi_rows, config.audio.length, sr)
  rows['harmonic_tone'], _ = row(tones, ref_midi_rows, np.arange(len(ref_midi_rows)))
  ref_pure = listening.fundamental_share(ref_audio, ref_midi, sr) > listening.PURE_TONE_SHARE
  measures = {
      'pitches': pitches.tolist(),
      'num_faces': int(len(index)),
      'num_identities': int(len(set(faces['name'][index]))),
      'rows': rows,
      'pure_tones': {
          'translations': {
              int(p): rows['translations']['per_pitch'][int(p)]['pure_tones'] for p in pitches
          },
          'real_notes': {
              int(p): float(ref_pure[ref_midi == p].mean()) if (ref_midi == p).any() else None for p in pitches
          }
      }
  }
  return measures, {'audio': audio, 'face_index': face_index, 'mfcc': listening.mfcc_means(audio, sr), **clips}
