r"""Translates face photos into notes with a trained face2music_jax model: one WAV file per face.

  python run_translate.py --workdir=/ckpt/aux photo.jpg group.png       # the config that training wrote there
  python run_translate.py --config=configs/aux.py --pitch=48 --output_dir=out/ --overwrite photo.jpg

A photo with one face gives `<output_dir>/<photo stem>.wav`, one with several `<photo stem>_face<k>.wav` (k = 0, 1,
... from left to right); each line of the output names a WAV file, its photo and the face's box.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from face2music_jax import cli
from face2music_jax import translate
from face2music_jax.data import images

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/aux.py or configs/aux.py:tiny '
    '(default: <workdir>/config.json).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory of the trained model (default: config.workdir).')
flags.DEFINE_integer('pitch', translate.DEFAULT_PITCH, "MIDI pitch of the notes, within the config's pitch range.")
flags.DEFINE_string('output_dir', '', 'Where the WAV files go (default: <workdir>/translations).')
flags.DEFINE_bool('overwrite', False, 'Replace existing WAV files.')
flags.DEFINE_integer('max_image_pixels', images.MAX_PIXELS, 'The largest photo accepted (width x height), checked '
                     'from its header before it is decoded.')


@cli.reports_known_errors
def main(argv):
  cli.quiet_library_logs()
  config, workdir = cli.config_and_workdir(FLAGS.config, FLAGS.workdir)
  logging.info('Config %s (%s), workdir %s', config.name, config.size, workdir)
  translations = translate.translate(config, workdir, argv[1:], midi_pitch=FLAGS.pitch, output_dir=FLAGS.output_dir,
                                     overwrite=FLAGS.overwrite, max_image_pixels=FLAGS.max_image_pixels)
  for t in translations:
    print(f'{t.wav}\t{t.image}\tface (left, top, right, bottom) = {t.box}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
