"""The code is formatted by the project's one formatter configuration (setup.cfg [yapf]) and passes the linter
(ruff, pyproject.toml [tool.ruff])."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ('face2music_jax', 'configs', 'tests', 'scripts', 'benchmarks', 'run_train.py', 'run_eval.py',
         'run_translate.py', 'run_experiment.py', 'run_serve.py')


@pytest.mark.slow  # 10-25 s of yapf over the whole tree: outside the fast tier; ruff (below, < 1 s) stays in it.
def test_the_code_is_formatted_with_the_projects_yapf_style():
  result = subprocess.run([sys.executable, '-m', 'yapf', '--diff', '--recursive', *PATHS], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and not result.stdout, (
      'Not formatted; run `yapf -i -r face2music_jax configs tests scripts benchmarks run_*.py`:\n' +
      result.stdout[:3000] + result.stderr[-2000:])


def test_the_code_passes_the_linter():
  result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--output-format=concise', *PATHS], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, 'ruff check . finds:\n' + result.stdout[:3000] + result.stderr[-2000:]
