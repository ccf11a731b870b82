r"""Exports a config's data (notes and face embeddings, with the face images) to one .npz file that training and
evaluation read without TensorFlow, TFDS or dlib (data/exported.py), e.g. on an accelerator machine.

  face2music export_data --config=aux --out=/tmp/aux_small_data.npz     # builds the embedded data if missing
  face2music train --config=aux --config.data.exported=/tmp/aux_small_data.npz --workdir=/tmp/aux
  # the faces of a folder of photos instead (the config's face embedder and dlib's descriptor, boxes, crops), to judge
  # a model on them where dlib is not installed: face2music eval --photos=/tmp/faces.npz
  face2music export_data --config=aux --photos=my_photos/ --out=/tmp/faces.npz
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from face2music_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config: a name (baseline, metric, aux; :tiny, :small or :paper for a size) or a config file.',
    lock_config=True)
flags.DEFINE_string('out', None, 'The .npz file to write (replaced).')
flags.DEFINE_string(
    'photos', None, 'A folder of photos: write the faces found in them instead of the data (for face2music eval '
    '--photos=<the file> and scripts/gpu_train.py --photos on machines without dlib).')
flags.mark_flags_as_required(['config', 'out'])


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  import os

  from face2music_jax import config_lib
  from face2music_jax import files
  from face2music_jax import stages
  from face2music_jax.data import exported
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  config = config_lib.validate(FLAGS.config)
  # Before the data are built or read (minutes): an --out that cannot be written fails at once.
  files.check_writable(os.path.dirname(os.path.abspath(FLAGS.out)), 'directory of --out')
  if FLAGS.photos:
    from face2music_jax.evaluators import photos
    from face2music_jax.faces import embedding
    images = photos.photo_files(FLAGS.photos)
    faces = photos.find_faces(embedding.make_embedder(config), images)
    out = photos.save_faces(FLAGS.out, faces, embedding.embedder_tag(config), FLAGS.photos)
    print(f'Wrote {out}: {len(faces["photo"])} faces of {len(images) - len(faces["skipped"])} photos '
          f'({len(faces["skipped"])} without a face); judge a model on them with face2music eval --photos={out}')
    return
  stages.ensure_data(config)
  out = exported.export(config, FLAGS.out)
  print(f'Wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB): train from it with '
        f'--config.data.exported={out}')


def run() -> None:
  """The command: flags (config names resolved, --help at once) -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
