r"""Can the harmonic synthesiser write each family's notes within a config's bounds? (evaluators/reach.py)

  python scripts/synth_reach.py --workdir=W                          # the bounds W was trained with
  python scripts/synth_reach.py --workdir=W --set=model.harmonic.fundamental_floor=0 --out=reach.json

Fits the synthesiser's controls to real training notes of every family (no network, no face), names the fits with
W's frozen family classifier, prints per family how often the classifier names the real notes and the fits right,
and writes the numbers as JSON (--out). --set changes a bound of the synthesiser (any config field, as
`face2music experiment --set`); the notes, the classifier and the audio stay W's. About 11 minutes for 16 notes of
each of 10 families and 600 steps on 2 CPU cores.
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


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a trained run (its config, notes and family classifier)')
  parser.add_argument('--per_family', type=int, default=16, help='real training notes drawn per family')
  parser.add_argument('--steps', type=int, default=600, help='Adam steps of the fit')
  parser.add_argument('--seed', type=int, default=0, help='the draw of the notes')
  parser.add_argument('--set', action='append', default=[], help='field=value: a bound of the synthesiser to change')
  parser.add_argument('--out', default='', help='write the result as JSON here')
  args = parser.parse_args(argv)
  if args.per_family < 1 or args.steps < 1:
    parser.error(f'--per_family and --steps must be positive; got {args.per_family} and {args.steps}.')
  config = workdir_lib.run_config(args.workdir)
  inputs = inputs_lib.for_config(config)
  classifier = stages.ensure_classifiers(config, args.workdir, inputs)['family']
  notes = inputs.notes('train')
  with config.unlocked():
    for text in args.set:
      field, value = experiment.parse_override(text)
      config_lib.set_field(config, field, value)
  config_lib.validate(config)
  result = reach.evaluate(config, classifier, notes, per_family=args.per_family, steps=args.steps, seed=args.seed)
  result.update(workdir=args.workdir, overrides=args.set)
  print(f'{"family":10s} notes  real named right  fits named right  fits named as')
  for name, row in result['families'].items():
    named = ', '.join(f'{k} {v}' for k, v in row['fit_named'].items())
    print(f'{name:10s} {row["notes"]:5d}  {row["real_named_right"]:16.2f}  {row["fit_named_right"]:16.2f}  {named}')
  print(f'{"all":10s} {sum(r["notes"] for r in result["families"].values()):5d}  {result["real_named_right"]:16.2f}  '
        f'{result["fit_named_right"]:16.2f}  ({result["fit_effective_families"]:.2f} effective families; '
        f'loss {result["loss"]:.3f})')
  if args.out:
    files.write_text(args.out, json.dumps(result, indent=2))
  return result


if __name__ == '__main__':
  main()
