r"""Serves the live page: drop a photo, see each face boxed and numbered, hear each face.

  face2music serve                               # the shipped model, http://127.0.0.1:8000
  face2music serve --workdir=/ckpt/aux --port=8080
  face2music serve --host=0.0.0.0                # reachable from other machines (mind who can reach it)

The page works with the keyboard and a screen reader, and at phone widths (face2music_jax/serve.py).
"""

from absl import app
from absl import flags
from absl import logging

from face2music_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string(
    'workdir', None, 'Work directory of a model you trained, or an exported model bundle (default: '
    'the shipped model).')
flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
flags.DEFINE_integer('port', 8000, 'Port to listen on.', lower_bound=0, upper_bound=65535)
flags.DEFINE_integer('max_upload_mb', 15, 'Largest photo upload (MB).', lower_bound=1)
flags.DEFINE_integer('max_faces', 30, 'Most faces translated in one photo.', lower_bound=1)
flags.DEFINE_integer('max_concurrent', 2, 'Translations at once; further requests are answered "busy".', lower_bound=1)


@cli.reports_known_errors
def main(argv):
  # pylint: disable=import-outside-toplevel  (after flag parsing: --help answers at once)
  import uvicorn

  from face2music_jax import serve
  from face2music_jax import translator as translator_lib
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  model = translator_lib.Translator.load(FLAGS.workdir)
  logging.info('Model: %s. Warming up...', model.manifest.get('name', model.source))
  serve.warm_up(model)
  limits = serve.Limits(max_upload_bytes=FLAGS.max_upload_mb * 1_000_000, max_faces=FLAGS.max_faces,
                        max_concurrent=FLAGS.max_concurrent)
  print(f'Open http://{FLAGS.host}:{FLAGS.port}/ in a browser (Ctrl-C stops the server).', flush=True)
  uvicorn.run(serve.make_app(model, limits), host=FLAGS.host, port=FLAGS.port, log_level='warning')


def run() -> None:
  """The command: flags -> main."""
  cli.run(main, __doc__)


if __name__ == '__main__':
  run()
