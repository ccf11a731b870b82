r"""Can the harmonic synthesiser write each family's notes within a config's bounds? (evaluators/reach.py)

  python scripts/synth_reach.py --workdir=W                          # the bounds W was trained with
  python scripts/synth_reach.py --workdir=W --set=model.harmonic.fundamental_floor=0 --out=reach.json

Fits the synthesiser's controls to real notes of every family (W's training notes, or --split=test; no network, no
face), names the fits with W's frozen family classifier, prints per family how often the classifier names the real
notes and the fits right and the fits' spectral loss, and writes the numbers as JSON (--out). --set changes a bound of
the synthesiser, a field of model.harmonic (as `face2music experiment --set`; the example removes the default's floor
below MIDI 60, where fundamental_floor_high takes over from 60 on); the notes, the classifier and the audio stay W's.
About 8.5 minutes for 16 notes of each of 10 families and 600 steps on 2 CPU cores.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from face2music_jax import config_lib
from face2music_jax import experiment
from face2music_jax import files
from face2music_jax import stages
from face2music_jax import workdir as workdir_lib
from face2music_jax.data import inputs as inputs_lib
from face2music_jax.evaluators import reach


def _overridden(config, overrides: list[str]):
  """The config with the --set overrides, each a field of model.harmonic (ConfigError otherwise), validated."""
  config = config.copy_and_resolve_references()
  for text in overrides:
    field, value = experiment.parse_override(text)
    if not field.startswith('model.harmonic.'):
      raise config_lib.ConfigError(f'--set {text!r}: only the synthesiser\'s bounds (model.harmonic.*) can change; the '
                                   'notes, the classifier and the audio stay the run\'s.')
    try:
      config_lib.set_field(config, field, value)
    except TypeError as e:
      raise config_lib.ConfigError(f'--set {text!r}: {e}') from e
  config_lib.validate(config)
  return config


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a trained run (its config, notes and family classifier)')
  parser.add_argument('--split', choices=('train', 'test'), default='train', help='the real notes drawn from')
  parser.add_argument('--per_family', type=int, default=16, help='real notes drawn per family')
  parser.add_argument('--steps', type=int, default=600, help='Adam steps of the fit')
  parser.add_argument('--seed', type=int, default=0, help='the draw of the notes')
  parser.add_argument('--set', action='append', default=[], help='model.harmonic.FIELD=value: a bound to change')
  parser.add_argument('--out', default='', help='write the result as JSON here')
  args = parser.parse_args(argv)
  if args.per_family < 1 or args.steps < 1:
    parser.error(f'--per_family and --steps must be positive; got {args.per_family} and {args.steps}.')
  try:
    run_config = workdir_lib.run_config(args.workdir)
    config = _overridden(run_config, args.set)  # Before the notes and the classifier: a bad --set fails at once.
    inputs = inputs_lib.for_config(run_config)
    classifier = stages.ensure_classifiers(run_config, args.workdir, inputs)['family']
    result = reach.evaluate(config, classifier, inputs.notes(args.split), per_family=args.per_family, steps=args.steps,
                            seed=args.seed)
    result.update(workdir=args.workdir, split=args.split, overrides=args.set)
    if args.out:
      files.write_text(args.out, json.dumps(result, indent=2))
  except (config_lib.ConfigError, workdir_lib.WorkdirError, ValueError, OSError, files.WriteError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  print(f'{"family":10s} notes  real named right  fits named right  loss  fits named as')
  for name, row in result['families'].items():
    named = ', '.join(f'{k} {v}' for k, v in row['fit_named'].items())
    print(f'{name:10s} {row["notes"]:5d}  {row["real_named_right"]:16.2f}  {row["fit_named_right"]:16.2f}  '
          f'{row["loss"]:4.2f}  {named}')
  print(f'{"all":10s} {sum(r["notes"] for r in result["families"].values()):5d}  {result["real_named_right"]:16.2f}  '
        f'{result["fit_named_right"]:16.2f}  {result["loss"]:4.2f}  ({result["fit_effective_families"]:.2f} effective '
        'families)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
