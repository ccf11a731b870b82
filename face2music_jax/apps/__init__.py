"""The command line: `face2music <command> [flags]`, one module per command.

  face2music translate photo.jpg        # notes of every face (apps/translate.py)
  face2music serve                      # the live page (apps/serve.py)
  face2music train --config=aux         # train your own (apps/train.py)
  face2music eval --workdir=DIR         # measures, figures and a page (apps/eval.py)
  face2music experiment                 # the paper's Table 1 over seeds (apps/experiment.py)
  face2music export --workdir=DIR --out=bundle/   # a model bundle from a work directory (apps/export.py)
  face2music export_data --config=aux --out=F.npz  # a config's data, read without TensorFlow (apps/export_data.py)

`python run_<command>.py` at the repository root runs the same commands.
"""

import importlib
import sys

COMMANDS = ('translate', 'serve', 'train', 'eval', 'experiment', 'export', 'export_data')


def main() -> None:
  """`face2music <command> ...`: runs that command's module with the rest of the arguments."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr if len(sys.argv) > 1 and sys.argv[1] not in ('-h', '--help') else sys.stdout)
    if len(sys.argv) > 1 and sys.argv[1] not in ('-h', '--help'):
      print(f'\nUnknown command {sys.argv[1]!r}: expected one of {", ".join(COMMANDS)}.', file=sys.stderr)
      sys.exit(2)
    sys.exit(0 if len(sys.argv) > 1 else 2)
  command = sys.argv.pop(1)
  sys.argv[0] = f'face2music {command}'
  importlib.import_module(f'face2music_jax.apps.{command}').run()
