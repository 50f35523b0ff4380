"""The README and CI promise the same test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  block = re.search(r"```bash\n(.*?)```", readme.split("## Quick start", 1)[1], re.S).group(1)
  test_cmd = [line for line in block.splitlines() if "pytest" in line]
  assert test_cmd and test_cmd[0].strip() in ci


def _package_imports() -> dict[str, set[str]]:
  """module -> the package modules it imports (at the top or inside a function)."""
  import ast
  pkg = ROOT / "embbert_jax"
  names = {}
  for f in pkg.rglob("*.py"):
    name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
    names[name.removesuffix(".__init__")] = f
  graph = {}
  for name, f in names.items():
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        base = node.module if node.level == 0 else f"embbert_jax.{node.module}"
        found.update([base, *(f"{base}.{a.name}" for a in node.names)])
      elif isinstance(node, ast.Import):
        found.update(a.name for a in node.names)
    graph[name] = {m for m in found if m in names and m != name}
  return graph


def test_no_import_cycle_and_no_oversized_module():
  graph, done, path = _package_imports(), set(), []

  def visit(m):
    assert m not in path, "import cycle: " + " -> ".join(path[path.index(m):] + [m])
    if m in done:
      return
    path.append(m)
    for n in sorted(graph[m]):
      visit(n)
    path.pop()
    done.add(m)

  for m in sorted(graph):
    visit(m)
  sizes = {f.name: len(f.read_text().splitlines()) for f in (ROOT / "embbert_jax").rglob("*.py")}
  assert max(sizes.values()) <= 550, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
