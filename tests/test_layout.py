"""The package's layout: its subpackages depend on each other one way (no package imports a package that imports it
back, directly or through others), and the face side imports neither the model's data nor the models.

Read from the source (ast), every import counted, those inside functions too: nothing is imported or run."""

import ast
import collections
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'face2music_jax'


def _subpackages() -> list[str]:
  top = os.path.join(ROOT, PACKAGE)
  return sorted(d for d in os.listdir(top) if os.path.isfile(os.path.join(top, d, '__init__.py')))


def _imported_modules(path: str) -> set[str]:
  """The modules that a file imports: 'a.b' for `import a.b`, 'a.b' and 'a.b.c' for `from a.b import c`."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def subpackage_imports() -> dict[str, dict[str, set[str]]]:
  """{subpackage: {another subpackage it imports: the modules of the first that import it}}."""
  subpackages = set(_subpackages())
  edges = collections.defaultdict(lambda: collections.defaultdict(set))
  for name in subpackages:
    for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE, name)):
      for file in sorted(f for f in files if f.endswith('.py')):
        path = os.path.join(directory, file)
        module = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
        for imported in _imported_modules(path):
          parts = imported.split('.')
          if len(parts) > 1 and parts[0] == PACKAGE and parts[1] in subpackages and parts[1] != name:
            edges[name][parts[1]].add(module)
  return edges


def _cycle(edges: dict[str, dict[str, set[str]]]) -> list[str] | None:
  """A cycle of subpackages [a, b, ..., a], or None."""
  state = {}  # 1: on the path being explored; 2: done, in no cycle.

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(edges.get(node, {})):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt, path + [nxt])):
        return found
    state[node] = 2
    return None

  for start in sorted(edges):
    if start not in state and (found := visit(start, [start])):
      return found
  return None


def test_the_expected_subpackages_are_seen():
  assert {'apps', 'audio', 'data', 'evaluators', 'faces', 'models'} <= set(_subpackages())


def test_no_package_imports_a_package_that_imports_it_back():
  edges = subpackage_imports()
  cycle = _cycle(edges)
  assert cycle is None, 'Subpackages import each other: ' + ' -> '.join(cycle) + ' (' + '; '.join(
      f'{a} -> {b}: {sorted(edges[a][b])}' for a, b in zip(cycle, cycle[1:])) + ')'


def test_the_face_side_imports_neither_the_data_nor_the_models():
  imported = subpackage_imports().get('faces', {})
  wrong = {name: sorted(imported[name]) for name in ('data', 'models') if name in imported}
  assert not wrong, f'face2music_jax.faces imports {wrong}'


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b': set()}, 'b': {'c': set()}, 'c': {'a': set()}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b': set()}, 'b': {'c': set()}}) is None
