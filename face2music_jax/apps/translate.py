r"""Translates face photos into notes: one WAV file per face, with the shipped model or one you trained.

  face2music translate photo.jpg                                   # the shipped model, middle C
  face2music translate --pitch=G3 --output_dir=out/ group.png photos/
  face2music translate --melody="C4 E4 G4:2 C5" --group --boxes group.png
  face2music translate --workdir=/ckpt/aux --midi=tune.mid photo.jpg   # a model you trained

Each face k (0, 1, ... left to right) of a photo gives `<output_dir>/<photo stem>_face<k>.wav`; each line of the
output names a WAV file, its photo and the face's box. A photo without a face (or that cannot be read) is reported
and skipped, the others are translated, and the command then exits with code 2.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from face2music_jax import cli
from face2music_jax.faces import images

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config of the model in --workdir, e.g. aux or configs/aux.py:small (default: '
    '<workdir>/config.json).', lock_config=True)
flags.DEFINE_string(
    'workdir', None, 'Work directory of a model you trained, or an exported model bundle (default: '
    'the shipped model).')
flags.DEFINE_string('pitch', 'C4', 'Pitch of the notes: a note name (C4, F#3, Bb2) or a MIDI number (60).')
flags.DEFINE_string(
    'melody', None, 'Play a melody instead of one note: note names or MIDI numbers with optional '
    'lengths in beats, R for a rest, e.g. "C4 E4 G4:2 R C5".')
flags.DEFINE_string('midi', None, 'Play the notes of a MIDI file instead of one note.')
flags.DEFINE_float('bpm', 120.0, 'Tempo of --melody (beats per minute).')
flags.DEFINE_bool('group', False, "Also play each photo's faces in turn, left to right: <stem>_group.wav.")
flags.DEFINE_bool('boxes', False, 'Also write each photo with its numbered face boxes: <stem>_boxes.png.')
flags.DEFINE_string('output_dir', 'translations', 'Where the files go.')
flags.DEFINE_bool(
    'overwrite', False, 'Replace existing output files and remove <stem>_face<k>.wav of faces beyond those '
    'found now; without it, an existing output stops the command before anything is written.')
flags.DEFINE_float('max_melody_s', 600.0, 'The longest melody or MIDI file played (seconds; each face\'s audio is '
                   'held in memory).', lower_bound=0.0)
flags.DEFINE_integer('max_image_pixels', images.MAX_PIXELS, 'The largest photo accepted (width x height), checked '
                     'from its header before it is decoded.', lower_bound=1)


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  from face2music_jax import preemption
  cli.quiet_library_logs()
  stopped = 'during the translation: stopped; none of its files were written (they are written together at the end).'
  with preemption.handling_sigterm(stopped):
    _translate(argv)


def _translate(argv) -> None:
  """The translation of the flags, under the stop handler."""
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  from face2music_jax import translate
  from face2music_jax import translator as translator_lib
  from face2music_jax.audio import melody as melody_lib
  if FLAGS.melody is not None and FLAGS.midi:
    raise app.UsageError('Pass --melody or --midi, not both.')
  if FLAGS.midi and FLAGS['bpm'].present:
    raise app.UsageError('--bpm is the tempo of --melody; a MIDI file keeps its own.')
  if FLAGS.config is not None and FLAGS.workdir is None:
    raise app.UsageError('--config describes the model of a --workdir: pass --workdir too (or neither, for the '
                         'shipped model).')
  melody = None
  try:
    if FLAGS.melody is not None:
      melody = melody_lib.parse(FLAGS.melody, FLAGS.bpm)
    elif FLAGS.midi:
      melody = melody_lib.read_midi(FLAGS.midi)
    melody_lib.check_length(melody or (), FLAGS.max_melody_s)
  except ValueError as e:
    raise translate.TranslationError(str(e)) from e
  model = translator_lib.Translator.load(FLAGS.workdir, FLAGS.config)
  if FLAGS.workdir is None:
    logging.info('Using the shipped model (%s, trained %d steps; face2music_jax/assets/default_model).',
                 model.manifest.get('name'), model.manifest.get('step', 0))
  translations, skipped = translate.translate(model, argv[1:], pitch=FLAGS.pitch, melody=melody,
                                              output_dir=FLAGS.output_dir, overwrite=FLAGS.overwrite, group=FLAGS.group,
                                              boxes=FLAGS.boxes, max_image_pixels=FLAGS.max_image_pixels)
  for t in translations:
    print(f'{t.wav}\t{t.image}\tface (left, top, right, bottom) = {t.box}')
  for problem in skipped:
    print(f'Skipped: {problem}', file=sys.stderr)
  if skipped:
    sys.exit(cli.KNOWN_ERROR_EXIT_CODE)


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
