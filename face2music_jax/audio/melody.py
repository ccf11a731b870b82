"""Melodies from one face's notes: parsing note lists and MIDI files, and holding, placing and releasing notes.

The generator writes one note of fixed length (8192 samples, 0.512 s at 16 kHz) ending in its release. A melody
note of another duration is made from the generated note of its pitch: a shorter one is cut and given the same
release; a longer one is held by looping a whole number of periods of the note's sustained part (crossfaded) and
then released. Notes are placed at their onsets and mixed; velocity scales loudness.

Note lists are text: note names or MIDI numbers separated by spaces, each with an optional length in beats after a
colon, and 'R' for a rest: "C4 E4 G4:2 R C5" (120 beats per minute unless given). MIDI files are read with
pretty_midi (every note of every instrument but drums).
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

from face2music_jax.audio import synthesis

_TOKEN = re.compile(r'^(?P<pitch>[A-Ga-g][#b]?-?\d+|\d+|[Rr])(?::(?P<beats>\d+(?:\.\d+)?))?$')
_CROSSFADE_S = 0.01


def _pretty_midi():
  """pretty_midi, imported when first used (note names, MIDI files, held notes): training and evaluation, which
  import the translator, never use it."""
  import pretty_midi  # pylint: disable=import-outside-toplevel
  return pretty_midi


@dataclasses.dataclass(frozen=True)
class Note:
  """A note of a melody: MIDI pitch, onset and duration (s), MIDI velocity (1-127)."""
  midi: int
  onset_s: float
  duration_s: float
  velocity: int = 100


def to_midi(pitch: int | str) -> int:
  """A MIDI number (60, '60') or a note name ('C4', 'F#3', 'Bb2'; C4 = 60) -> MIDI number.

  Raises:
    ValueError: naming the pitch, if it is neither.
  """
  if isinstance(pitch, (int, np.integer)):
    midi = int(pitch)
  else:
    text = str(pitch).strip()
    try:
      midi = int(text) if text.isdigit() else _pretty_midi().note_name_to_number(text)
    except (ValueError, KeyError, IndexError) as e:
      raise ValueError(f'{pitch!r} is not a pitch: expected a MIDI number (60) or a note name (C4, F#3, Bb2).') from e
  if not 0 <= midi <= 127:
    raise ValueError(f'{pitch!r} is not a MIDI pitch (0..127).')
  return midi


def note_name(midi: int) -> str:
  """MIDI number -> note name (60 -> 'C4')."""
  return _pretty_midi().note_number_to_name(int(midi))


def parse(text: str, bpm: float = 120.0) -> list[Note]:
  """Notes of a note list ("C4 E4 G4:2 R C5"; module docstring), one after another.

  Raises:
    ValueError: naming the token that is not a note, a rest or a length; or a melody without a note (only rests).
  """
  if bpm <= 0:
    raise ValueError(f'Tempo {bpm} is not a positive number of beats per minute.')
  beat, onset, notes = 60.0 / bpm, 0.0, []
  for token in text.replace(',', ' ').split():
    match = _TOKEN.match(token)
    if not match:
      raise ValueError(f'{token!r} in the melody is not a note: expected a name or MIDI number with an optional '
                       'length in beats (C4, F#3:2, 60:0.5) or R for a rest.')
    duration = beat * float(match['beats'] or 1.0)
    if duration <= 0:
      raise ValueError(f'{token!r} in the melody has no length.')
    if match['pitch'].upper() != 'R':
      notes.append(Note(to_midi(match['pitch']), onset, duration))
    onset += duration
  if not notes:
    raise ValueError(f'The melody {text!r} has no note (only rests): give at least one, e.g. "C4 E4 G4".')
  return notes


def check_length(notes: Sequence[Note], max_s: float) -> None:
  """Raises ValueError if the melody (or MIDI file) ends after `max_s` seconds (its audio is held in memory)."""
  end = max((n.onset_s + n.duration_s for n in notes), default=0.0)
  if end > max_s:
    raise ValueError(f'The melody lasts {end:.0f} s, longer than the {max_s:.0f} s allowed.')


def read_midi(path: str) -> list[Note]:
  """Every note of a MIDI file but drums, by onset.

  Raises:
    ValueError: naming the file, if it cannot be read as MIDI or has no notes.
  """
  pretty_midi = _pretty_midi()  # (Not inside the try: a missing library is not a bad file.)
  try:
    midi = pretty_midi.PrettyMIDI(path)
  except Exception as e:  # pretty_midi/mido raise many kinds for a bad file.
    raise ValueError(f'Cannot read {path} as a MIDI file: {e}') from e
  notes = [
      Note(n.pitch, float(n.start), float(n.end - n.start), n.velocity) for inst in midi.instruments if not inst.is_drum
      for n in inst.notes if n.end > n.start
  ]
  if not notes:
    raise ValueError(f'{path} has no notes (drums are not played).')
  return sorted(notes, key=lambda n: (n.onset_s, n.midi))


def hold(note: np.ndarray, samples: int, midi: int, sample_rate: int, release_s: float) -> np.ndarray:
  """A generated note of [L] samples (ending in its release) made `samples` long, ending in the same release.

  Longer: the part before the release is extended by repeating its last stretch of a whole number of periods of
  the note's fundamental (about 0.15 s), joined by 10 ms crossfades. Shorter: cut. Either way the last `release_s`
  fade out (synthesis.release_window).
  """
  note = np.asarray(note, np.float32)
  release = int(round(release_s * sample_rate))
  body = note[:len(note) - release] if release else note
  if samples > len(body):
    period = sample_rate / _pretty_midi().note_number_to_hz(midi)
    loop = int(round(max(1, round(0.15 * sample_rate / period)) * period))
    loop = min(loop, len(body) // 2)
    fade = min(int(_CROSSFADE_S * sample_rate), loop // 2)
    segment = body[len(body) - loop:]
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = [body]
    total = len(body)
    while total < samples:
      # The segment starts where the previous copy started: its first `fade` samples cross the previous end.
      piece = segment.copy()
      tail = out[-1][-fade:] if fade else np.zeros(0, np.float32)
      if fade:
        out[-1] = out[-1][:-fade]
        piece[:fade] = tail * (1.0 - ramp) + piece[:fade] * ramp
      out.append(piece)
      total += len(piece) - fade
    body = np.concatenate(out)
  held = body[:samples].copy()
  return held * synthesis.release_window(samples, sample_rate, min(release_s, samples / sample_rate))


def render(notes: Sequence[Note], note_audio: Mapping[int, np.ndarray], sample_rate: int,
           release_s: float) -> np.ndarray:
  """Mixes the notes at their onsets, each held to its duration (`hold`) and scaled by velocity / 127.

  Args:
    notes: the melody.
    note_audio: MIDI pitch -> the generated note [L] of that pitch.
    sample_rate: Hz.
    release_s: the generated notes' release (s).

  Returns:
    float32 [T], T = the end of the last note, peak at most 1.
  """
  if not notes:
    raise ValueError('The melody has no notes.')
  end = max(int(round((n.onset_s + n.duration_s) * sample_rate)) for n in notes)
  mix = np.zeros(end, np.float32)
  for n in notes:
    start = int(round(n.onset_s * sample_rate))
    samples = max(1, int(round(n.duration_s * sample_rate)))
    held = hold(note_audio[n.midi], samples, n.midi, sample_rate, release_s) * (n.velocity / 127.0)
    mix[start:start + len(held)] += held[:end - start]
  peak = float(np.max(np.abs(mix)))
  return mix / peak if peak > 1.0 else mix
