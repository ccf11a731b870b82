"""NSynth-format single notes rendered from a General MIDI SoundFont, as a TFDS dataset ('soundfont_notes').

Each note is 4 s of 16 kHz mono audio: the key is held for 3 s, then released for 1 s, as in NSynth. The NSynth
instrument families are played by the General MIDI programs of `config.notes.programs`, over the MIDI pitches
each family plausibly plays (`FAMILY_PITCH_RANGES`, intersected with the configured grid) and the configured
velocities, less the (program, pitch) pairs of `config.notes.exclude`. The features have exactly the names,
dtypes, shapes and class counts of TFDS `nsynth`, so one input pipeline (`face2music_jax.data.note_batches`) reads
both.

Feature values:
  - id: '<family>_synthetic_<program:03d>-<pitch:03d>-<velocity:03d>', NSynth's id layout, with the 1-based GM
    program number standing for the instrument number.
  - instrument/label: GM program - 1 (0..127, a stable index below NSynth's 1006); instrument/source: 'synthetic'
    (a sampler synthesizer plays the notes).
  - qualities: only two are measured, from the RMS envelope in 50 ms frames: `fast_decay` (the envelope just
    before note-off at 3 s is more than 40 dB below its peak) and `long_release` (the last 250 ms are within 40 dB
    of the peak). The other eight are always False: they are not measured.

Rendering is deterministic: neither renderer is random, and every note starts from silence. Splits hold out
whole notes: all velocities of an (instrument, pitch) pair go to the same split, ranked by a hash of
'<instrument>-<pitch>' into 80/10/10 % of the pairs (each split gets at least one pair), so a classifier never
sees a louder copy of a test note.
"""

import dataclasses
import hashlib
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags as absl_flags
from absl import logging

from face2music_jax import config_lib
from face2music_jax import preemption

SAMPLE_RATE = 16000
NUM_SAMPLES = 4 * SAMPLE_RATE  # 4 s per note, as NSynth.
HOLD_SAMPLES = 3 * SAMPLE_RATE  # Note-off after 3 s, then 1 s of release.
SOURCE = 'synthetic'
INSTRUMENT_SOURCES = ('acoustic', 'electronic', 'synthetic')  # TFDS nsynth's ClassLabel order.
NUM_INSTRUMENT_LABELS = 1006  # TFDS nsynth's instrument/label classes.
QUALITIES = ('bright', 'dark', 'distortion', 'fast_decay', 'long_release', 'multiphonic', 'nonlinear_env', 'percussive',
             'reverb', 'tempo-synced')
SPLIT_FRACTIONS = (('valid', 0.1), ('test', 0.1))  # The rest of the (instrument, pitch) pairs is 'train'.

# Plausible MIDI pitch ranges (inclusive) of each NSynth family's real instruments, so that, e.g., no flute plays
# a bass note. Intersected with config.notes.pitch_min..pitch_max.
FAMILY_PITCH_RANGES = {
    'bass': (28, 67),  # Electric/acoustic bass E1..G4.
    'brass': (34, 84),  # Trombone/horn B-flat1 .. trumpet C6.
    'flute': (55, 96),  # Alto flute G3 .. flute C7.
    'guitar': (40, 88),  # E2..E6.
    'keyboard': (21, 108),  # Piano A0..C8.
    'mallet': (45, 96),  # Marimba A2 .. vibraphone/marimba C7.
    'organ': (36, 96),  # C2..C7 (manuals).
    'reed': (44, 94),  # Tenor sax A-flat2 .. clarinet B-flat6.
    'string': (36, 96),  # Cello C2 .. violin C7.
    'synth_lead': (24, 96),
    'vocal': (40, 84),  # Bass E2 .. soprano C6.
}

# Silence and quality thresholds, relative to full scale (|x| <= 1) and to the note's peak.
SILENCE_PEAK = 1e-4
_FRAME = SAMPLE_RATE // 20  # 50 ms RMS frames.
_QUALITY_DB = 40.0
_FLUSH_SAMPLES = SAMPLE_RATE // 10  # Rendered and dropped after each note, see _TinySoundFontRenderer.


class SoundFontError(ValueError):
  """The SoundFont file is missing, unreadable or lacks a program; the message names the file."""


class CorruptDatasetError(ValueError):
  """A prepared dataset's description (dataset_info.json, features.json) does not read; the message names it."""


class SilentNoteError(RuntimeError):
  """A rendered note is silent; the message names the program, pitch and velocity."""


@dataclasses.dataclass(frozen=True)
class Note:
  """One note of the grid: an NSynth family played by a 1-based General MIDI program."""
  family: str
  program: int
  pitch: int
  velocity: int

  @property
  def instrument(self) -> str:
    return f'{self.family}_{SOURCE}_{self.program:03d}'

  @property
  def id(self) -> str:
    return f'{self.instrument}-{self.pitch:03d}-{self.velocity:03d}'


def default_soundfont() -> str:
  """Path of TimGM6mb.sf2, the General MIDI SoundFont that ships inside the pretty_midi package."""
  import pretty_midi  # pylint: disable=g-import-not-at-top  # Only needed to locate the file.
  return os.path.join(os.path.dirname(pretty_midi.__file__), 'TimGM6mb.sf2')


def soundfont_path(config: ml_collections.ConfigDict) -> str:
  """The SoundFont of `config.notes.soundfont` ('' = TimGM6mb.sf2), as a real path; checks that it is a file."""
  path = os.path.realpath(os.path.expanduser(config.notes.soundfont or default_soundfont()))
  if not os.path.isfile(path):
    raise SoundFontError(f'SoundFont file {path} (config.notes.soundfont) does not exist or is not a file.')
  return path


def note_grid(config: ml_collections.ConfigDict) -> list[Note]:
  """All notes the builder renders, sorted by id.

  Pitches step by `config.notes.pitch_step` from `config.notes.pitch_min`, so all families share one grid, and
  are kept where they fall within the family's `FAMILY_PITCH_RANGES` and (program, pitch) is not in
  `config.notes.exclude`.
  """
  n = config.notes
  grid = range(n.pitch_min, n.pitch_max + 1, n.pitch_step)
  exclude = {(int(program), int(pitch)) for program, pitch in n.exclude}
  notes = []
  for family, programs in n.programs.items():
    low, high = FAMILY_PITCH_RANGES[family]
    for program in programs:
      notes.extend(
          Note(family, int(program), pitch, int(velocity)) for pitch in grid
          if low <= pitch <= high and (int(program), pitch) not in exclude for velocity in n.velocities)
  return sorted(notes, key=lambda note: note.id)


def _stable_hash(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def assign_splits(notes: Sequence[Note]) -> dict[str, list[Note]]:
  """Splits notes into 'train'/'valid'/'test' by whole (instrument, pitch) pairs, deterministically.

  The pairs are ranked by a hash of '<instrument>-<pitch>'; the first 10 % go to 'valid', the next 10 % to
  'test' (each at least one pair when there are three or more), the rest to 'train'.
  """
  pairs = sorted({(note.instrument, note.pitch) for note in notes}, key=lambda p: _stable_hash(f'{p[0]}-{p[1]}'))
  split_of, start = {}, 0
  for split, fraction in SPLIT_FRACTIONS:
    count = max(1, round(fraction * len(pairs))) if len(pairs) >= 3 else 0
    split_of.update((pair, split) for pair in pairs[start:start + count])
    start += count
  splits = {'train': [], 'valid': [], 'test': []}
  for note in notes:
    splits[split_of.get((note.instrument, note.pitch), 'train')].append(note)
  return splits


def nsynth_features() -> tfds.features.FeaturesDict:
  """The feature spec of TFDS `nsynth` (names, dtypes, shapes, class counts)."""
  return tfds.features.FeaturesDict({
      'id': np.str_,
      'audio': tfds.features.Audio(shape=(NUM_SAMPLES,), dtype=np.float32, sample_rate=SAMPLE_RATE),
      'pitch': tfds.features.ClassLabel(num_classes=128),
      'velocity': tfds.features.ClassLabel(num_classes=128),
      'instrument': {
          'label': tfds.features.ClassLabel(num_classes=NUM_INSTRUMENT_LABELS),
          'family': tfds.features.ClassLabel(names=config_lib.NSYNTH_FAMILIES),
          'source': tfds.features.ClassLabel(names=INSTRUMENT_SOURCES),
      },
      'qualities': {
          quality: np.bool_ for quality in QUALITIES
      },
  })


def measure_qualities(audio: np.ndarray) -> dict[str, bool]:
  """NSynth qualities of one note; only `fast_decay` and `long_release` are measured, the rest are False.

  Args:
    audio: [64000] float32, 16 kHz, note-off at 3 s.

  Returns:
    A dict over all ten NSynth quality names.
  """
  frames = audio[:NUM_SAMPLES // _FRAME * _FRAME].reshape(-1, _FRAME)
  rms_db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20)
  peak_db = rms_db.max()
  qualities = dict.fromkeys(QUALITIES, False)
  qualities['fast_decay'] = bool(rms_db[HOLD_SAMPLES // _FRAME - 1] < peak_db - _QUALITY_DB)
  qualities['long_release'] = bool(rms_db[-SAMPLE_RATE // 4 // _FRAME:].max() > peak_db - _QUALITY_DB)
  return qualities


class Renderer(Protocol):
  """Plays one note of a loaded SoundFont."""

  def render(self, program: int, pitch: int, velocity: int) -> np.ndarray:
    """Returns [64000] float32 mono audio at 16 kHz: `pitch` held 3 s, released 1 s; `program` is 1-based."""


class _TinySoundFontRenderer:
  """Renders notes with TinySoundFont (pip only); velocity changes loudness, not timbre."""

  def __init__(self, path: str):
    try:
      import tinysoundfont  # pylint: disable=g-import-not-at-top  # Optional: the renderer is a config choice.
    except ImportError as e:
      raise ImportError("config.notes.renderer = 'tinysoundfont' needs the tinysoundfont package: run "
                        'scripts/install.sh (it installs tinysoundfont==0.3.7 with --no-deps).') from e
    self._path = path
    self._synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    try:
      self._sfid = self._synth.sfload(path)
    except (RuntimeError, tinysoundfont.SoundFontException) as e:
      raise SoundFontError(f'Cannot read the SoundFont file {path}: not a valid .sf2 file ({e}).') from e

  def render(self, program: int, pitch: int, velocity: int) -> np.ndarray:
    """Returns [64000] float32 mono audio of one note; `program` is 1-based."""
    try:
      self._synth.program_select(0, self._sfid, 0, program - 1)
    except RuntimeError as e:
      raise SoundFontError(f'The SoundFont file {self._path} has no General MIDI program {program}: {e}') from e
    self._synth.noteon(0, pitch, velocity)
    held = np.frombuffer(self._synth.generate(HOLD_SAMPLES), np.float32)
    self._synth.noteoff(0, pitch)
    released = np.frombuffer(self._synth.generate(NUM_SAMPLES - HOLD_SAMPLES), np.float32)
    # All Sound Off fades voices out over a few ms; render that fade away so that the next note starts from
    # silence and every note sounds the same whatever was played before it.
    self._synth.sounds_off()
    self._synth.generate(_FLUSH_SAMPLES)
    return np.concatenate([held, released]).reshape(-1, 2).mean(axis=1)


class _FluidSynthRenderer:
  """Renders notes with FluidSynth (pyfluidsynth + Debian's libfluidsynth3); velocity also changes timbre."""

  def __init__(self, path: str):
    try:
      import fluidsynth  # pylint: disable=g-import-not-at-top  # Optional: needs a system library.
    except ImportError as e:  # pyfluidsynth raises ImportError when it cannot find libfluidsynth either.
      raise ImportError("config.notes.renderer = 'fluidsynth' needs pyfluidsynth and FluidSynth's library: "
                        '`apt-get install libfluidsynth3 && pip install pyfluidsynth`, or use '
                        "config.notes.renderer = 'tinysoundfont'.") from e
    self._path = path
    # No reverb or chorus: NSynth notes are dry, and both would bleed from one note into the next.
    self._synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE), **{
        'synth.reverb.active': 0,
        'synth.chorus.active': 0
    })
    self._sfid = self._synth.sfload(path)
    if self._sfid < 0:
      raise SoundFontError(f'Cannot read the SoundFont file {path}: FluidSynth failed to load it.')

  def render(self, program: int, pitch: int, velocity: int) -> np.ndarray:
    """Returns [64000] float32 mono audio of one note; `program` is 1-based."""
    if self._synth.program_select(0, self._sfid, 0, program - 1) < 0:
      raise SoundFontError(f'The SoundFont file {self._path} has no General MIDI program {program}.')
    self._synth.noteon(0, pitch, velocity)
    held = self._synth.get_samples(HOLD_SAMPLES)
    self._synth.noteoff(0, pitch)
    released = self._synth.get_samples(NUM_SAMPLES - HOLD_SAMPLES)
    self._synth.system_reset()
    stereo = np.concatenate([held, released]).reshape(-1, 2).astype(np.float32) / 32768.0
    return stereo.mean(axis=1)


_RENDERERS = {'tinysoundfont': _TinySoundFontRenderer, 'fluidsynth': _FluidSynthRenderer}


def render_note(renderer: Renderer, note: Note) -> np.ndarray:
  """Renders one note and rejects silence.

  Args:
    renderer: see `open_renderer`.
    note: the note to play.

  Returns:
    [64000] float32 audio, 16 kHz mono, in [-1, 1].
  """
  audio = np.ascontiguousarray(renderer.render(note.program, note.pitch, note.velocity), dtype=np.float32)
  if audio.shape != (NUM_SAMPLES,):
    raise RuntimeError(f'Renderer returned audio of shape {audio.shape} for {note.id}; expected ({NUM_SAMPLES},).')
  if not np.max(np.abs(audio)) > SILENCE_PEAK:
    raise SilentNoteError(f'The rendered note is silent: GM program {note.program} ({note.family}), pitch '
                          f'{note.pitch}, velocity {note.velocity}: the SoundFont has no sample there. Add '
                          f'({note.program}, {note.pitch}) to config.notes.exclude, narrow config.notes.pitch_min/'
                          'pitch_max, or choose another program.')
  return audio


def open_renderer(name: str, path: str) -> Renderer:
  """Loads the SoundFont at `path` into the renderer `name` ('tinysoundfont' or 'fluidsynth')."""
  return _RENDERERS[name](path)


@dataclasses.dataclass(eq=False)
class NotesConfig(tfds.core.BuilderConfig):
  """What the builder renders; its name carries a hash of all of it, so different data never share a directory.

  Attributes:
    soundfont: real path of the .sf2 file.
    renderer: 'tinysoundfont' or 'fluidsynth'.
    notes: the note grid (see `note_grid`).
  """
  soundfont: str = ''
  renderer: str = 'tinysoundfont'
  notes: tuple[Note, ...] = dataclasses.field(default=(), repr=False)  # Thousands of notes: keep logs short.


def builder_config(config: ml_collections.ConfigDict) -> NotesConfig:
  """The builder config for `config.notes`; fails with SoundFontError naming a missing SoundFont file."""
  path = soundfont_path(config)
  notes = tuple(note_grid(config))
  if not notes:
    raise ValueError('The note grid is empty: no pitch of config.notes.pitch_min..pitch_max (step pitch_step) '
                     'falls within FAMILY_PITCH_RANGES of the families in config.notes.programs.')
  fingerprint = json.dumps({
      'soundfont': path,
      'size': os.path.getsize(path),
      'renderer': config.notes.renderer,
      'notes': [note.id for note in notes]
  })
  stem = ''.join(c if c.isalnum() else '_' for c in os.path.splitext(os.path.basename(path))[0].lower())
  return NotesConfig(name=f'{stem}_{config.notes.renderer}_{_stable_hash(fingerprint)[:12]}',
                     description=f'{len(notes)} notes from {path} rendered with {config.notes.renderer}.',
                     soundfont=path, renderer=config.notes.renderer, notes=notes)


class _Progress:
  """Logs notes rendered / total and elapsed time about every 10 %."""

  def __init__(self, total: int):
    self._total, self._done, self._start = total, 0, time.perf_counter()
    self._every = max(1, total // 10)

  def step(self) -> None:
    self._done += 1
    if self._done % self._every == 0 or self._done == self._total:
      elapsed = time.perf_counter() - self._start
      logging.info('soundfont_notes: rendered %d / %d notes in %.1f s (%.0f notes/s).', self._done, self._total,
                   elapsed, self._done / max(elapsed, 1e-9))


class SoundfontNotes(tfds.core.GeneratorBasedBuilder):
  """NSynth-format notes rendered from a General MIDI SoundFont (see the module docstring)."""

  name = 'soundfont_notes'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIG_CLS = NotesConfig

  # Nothing is downloaded: TFDS's "Downloading and preparing dataset" lines would mislead (prepare() logs instead).
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description='NSynth-format notes (4 s, 16 kHz, held 3 s) rendered from a General MIDI SoundFont.',
        features=nsynth_features(),
        homepage='https://g.co/magenta/nsynth-dataset',
        metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE, soundfont=c.soundfont, renderer=c.renderer),
    )

  def _split_generators(self, dl_manager) -> dict[str, Iterator[tuple[str, dict]]]:
    del dl_manager  # Nothing to download: the SoundFont is a local file.
    c = self.builder_config
    renderer = open_renderer(c.renderer, c.soundfont)
    progress = _Progress(len(c.notes))
    return {split: self._generate_examples(renderer, notes, progress) for split, notes in assign_splits(c.notes).items()}

  def _generate_examples(self, renderer: Renderer, notes: Sequence[Note],
                         progress: _Progress) -> Iterator[tuple[str, dict]]:
    for note in notes:
      _raise_if_stopped()
      audio = render_note(renderer, note)
      progress.step()
      yield note.id, {
          'id': note.id,
          'audio': audio,
          'pitch': note.pitch,
          'velocity': note.velocity,
          'instrument': {
              'label': note.program - 1,
              'family': note.family,
              'source': SOURCE
          },
          'qualities': measure_qualities(audio),
      }
    _raise_if_stopped()  # Also after the last note: TFDS then shuffles and writes the split.


def notes_builder(config: ml_collections.ConfigDict) -> SoundfontNotes:
  """The builder for `config.notes` in `config_lib.tfds_data_dir(config)`, prepared or not.

  Raises:
    CorruptDatasetError: the prepared dataset's description does not read (it names the directory).
  """
  c = builder_config(config)
  where = os.path.join(config_lib.tfds_data_dir(config), SoundfontNotes.name, c.name, str(SoundfontNotes.VERSION))
  return readable_builder(lambda: SoundfontNotes(config=c, data_dir=config_lib.tfds_data_dir(config)), where,
                          'delete that directory to render the notes again')


def readable_builder(make: Callable[[], tfds.core.DatasetBuilder], where: str,
                     way_out: str) -> tfds.core.DatasetBuilder:
  """`make()`, a TFDS builder (which reads its prepared dataset's description), with a damaged description (TFDS
  raises UnicodeDecodeError, JSONDecodeError, KeyError, ...) as one CorruptDatasetError naming `where`."""
  try:
    builder = make()
    if builder.is_prepared():
      _ = builder.info.features  # Read now, not at the first use.
    return builder
  except (ValueError, OSError, KeyError, TypeError) as e:
    raise CorruptDatasetError(f'The description of the dataset in {where} (its dataset_info.json or features.json) '
                              f'does not read: {type(e).__name__}: {e}. To go on, {way_out}.') from e


def prepare_notes(config: ml_collections.ConfigDict) -> SoundfontNotes:
  """Returns the builder for `config.notes`, rendering and writing its dataset first when it is missing.

  Rendering runs at hundreds of notes/s; writing is slower, bound by TFDS serializing each note's 64000 floats
  into a tf.train.Example, as TFDS nsynth stores them.

  Raises:
    SoundFontError: the SoundFont file is missing, unreadable, or lacks a configured program (names the file).
    SilentNoteError: a rendered note is silent (names its program, pitch and velocity).
    ImportError: the configured renderer is not installed (says how to install it).
  """
  builder = notes_builder(config)
  if builder.is_prepared():
    return builder
  c = builder.builder_config
  logging.info('Rendering %d notes from %s with %s into %s.', len(c.notes), c.soundfont, c.renderer, builder.data_dir)
  start = time.perf_counter()
  # Never look for a prepared copy on GCS: this dataset exists only locally, and machines may be offline.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  logging.info('Prepared %s in %.1f s.', builder.data_dir, time.perf_counter() - start)
  return builder


# The signal that asked the notes process to stop (second_process_main), or None.
_stop_signal: str | None = None


def _raise_if_stopped() -> None:
  """Raises KeyboardInterrupt again if a stop signal arrived: the handler's own raise is lost where the signal
  lands inside a garbage-collection callback (JAX's `_xla_gc_callback`), whose exceptions Python drops (seen: the
  notes process then rendered every note and exited 0). Called before each note and after a split's last."""
  if _stop_signal:
    raise KeyboardInterrupt(_stop_signal)


def second_process_main(answer_fd: int) -> None:
  """The process that `stages.ensure_data` starts to render the notes while it embeds the faces.

  Reads {'config', 'verbosity', 'filters'} pickled on stdin and renders the config's notes, logging as the first
  process does. On an error it logs it with its traceback and writes the pickled exception to `answer_fd` (its
  stdout; anything printed goes to stderr), then exits with 1. The first SIGTERM or SIGINT stops it as
  KeyboardInterrupt does, through TFDS's clean-up of its incomplete directory, with exit code 3 (preemption.EXIT_CODE,
  as a stopped command); further ones are ignored, so that they cannot cut that clean-up short. A stop whose
  KeyboardInterrupt was lost is raised again before the next note (`_raise_if_stopped`); one that surfaced as
  another error (an import it interrupted raises ImportError) also ends with code 3, not as that error.
  """

  def stop_once(signum, frame):
    global _stop_signal
    del frame
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_signal = signal.Signals(signum).name
    raise KeyboardInterrupt(_stop_signal)

  global _stop_signal
  _stop_signal = None
  signal.signal(signal.SIGTERM, stop_once)
  signal.signal(signal.SIGINT, stop_once)
  answer = os.fdopen(answer_fd, 'wb')
  try:
    request = pickle.loads(sys.stdin.buffer.read())
    absl_flags.FLAGS.mark_as_parsed()  # No command line here: absl's own log format and handler, as a command's.
    logging.use_absl_handler()
    logging.set_verbosity(request['verbosity'])
    for pickled in request['filters']:
      try:
        logging.get_absl_handler().addFilter(pickle.loads(pickled))
      except Exception:  # pylint: disable=broad-except  (e.g. one defined in the first process's main script)
        pass
    prepare_notes(request['config'])
  except KeyboardInterrupt:
    sys.exit(preemption.EXIT_CODE)
  except Exception as e:  # pylint: disable=broad-except  (the parent raises it)
    if _stop_signal:  # The stop surfaced as another error: seen, an import it interrupted raised ImportError.
      logging.info('Stopped by %s (it surfaced as %s: %s).', _stop_signal, type(e).__name__, e)
      sys.exit(preemption.EXIT_CODE)
    logging.exception('Rendering the notes failed.')
    try:
      answer.write(pickle.dumps(e))
      answer.flush()
    except Exception:  # pylint: disable=broad-except  (one that does not pickle: the log above says it)
      pass
    sys.exit(1)
