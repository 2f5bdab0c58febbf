"""The package's layering (docs/design.md, "Where things go"): commands on top, the library by
concern below; no library module imports a command module, and no two modules import each other
through any chain. Read from the source with `ast`, so the test costs no imports."""

import ast
import pathlib

from fer_jax import cli

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fer_jax"
COMMAND_MODULES = {f"fer_jax.{module}" for module, _ in cli.COMMANDS.values()}


def _module_name(path, package):
  parts = path.relative_to(package.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package=PACKAGE):
  """{module: set of fer_jax modules it imports}, deferred imports inside functions included;
  `from fer_jax.x import y` counts as an import of fer_jax.x.y when y is a module."""
  modules = {_module_name(p, package): p for p in package.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          targets.add(full if full in modules else node.module)
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = "done"
    return None

  for start in sorted(graph):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_every_command_module_exists():
  graph = import_graph()
  assert COMMAND_MODULES <= set(graph), COMMAND_MODULES - set(graph)


def test_no_module_imports_a_command():
  offenders = {(m, t) for m, targets in import_graph().items() for t in targets
               if t in COMMAND_MODULES}
  assert not offenders, f"modules importing a command module: {sorted(offenders)}"


def test_no_import_cycle():
  assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()))


def test_the_checks_see_a_cycle_and_a_command_import(tmp_path):
  package = tmp_path / "fer_jax"
  (package / "sub").mkdir(parents=True)
  (package / "a.py").write_text("from fer_jax.sub import b\n")
  (package / "sub" / "__init__.py").write_text("")
  (package / "sub" / "b.py").write_text("def f():\n  from fer_jax import a\n")
  (package / "main.py").write_text("")
  (package / "c.py").write_text("import fer_jax.main\n")
  graph = import_graph(package)
  assert _cycle(graph) in (["fer_jax.a", "fer_jax.sub.b", "fer_jax.a"],
                           ["fer_jax.sub.b", "fer_jax.a", "fer_jax.sub.b"])
  assert "fer_jax.main" in graph["fer_jax.c"]
