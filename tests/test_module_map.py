"""docs/design.md's module map matches the code: it names every module of leo_tf, and
every import of one leo_tf module by another goes to its own row or a row above."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "leo_tf")


def module_map():
  """The table's rows in order: (package, or None for the top level; {module names}, or
  None for 'one module per command')."""
  with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("| ") or len(cells) != 3 or cells[0] == "package":
      continue
    package = None if cells[0] == "top level" else cells[0].strip("`/")
    names = None if "one module per command" in cells[1] else set(
        re.findall(r"`(\w+)`", cells[1]))
    rows.append((package, names))
  return rows


def modules():
  """{dotted name below leo_tf ('leo.model', 'gin_config'): file path}, no __init__."""
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py") and name != "__init__.py":
        path = os.path.join(directory, name)
        found[os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")] = path
  return found


def row_of(module, rows):
  """The map row of a dotted module below leo_tf (a package itself: its row)."""
  top, _, rest = module.partition(".")
  for row, (package, names) in enumerate(rows):
    if package is None and not rest and top in names:  # a top-level module
      return row
    if package == top and (names is None or not rest or rest in names):
      return row
  return None


def leo_tf_imports(path):
  """The leo_tf modules a file imports, anywhere in it (function-level imports too)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name.startswith("leo_tf."):
        yield name[len("leo_tf."):]


def _importable(name, known):
  """'leo.model.LEO' -> 'leo.model'; 'leo' (a package) stays 'leo'."""
  parts = name.split(".")
  for end in range(len(parts), 0, -1):
    candidate = ".".join(parts[:end])
    if candidate in known or os.path.isdir(os.path.join(PACKAGE, *parts[:end])):
      return candidate
  return name


def test_the_map_names_every_module_and_only_modules_that_exist():
  rows, found = module_map(), modules()
  assert len(rows) >= 10
  unmapped = sorted(m for m in found if row_of(m, rows) is None)
  assert not unmapped, f"modules missing from docs/design.md's module map: {unmapped}"
  for package, names in rows:
    for name in names or ():
      module = name if package is None else f"{package}.{name}"
      assert module in found, f"docs/design.md maps {module}, which does not exist"


def test_imports_go_to_the_same_row_or_above():
  rows, found = module_map(), modules()
  upward = []
  for module, path in sorted(found.items()):
    mine = row_of(module, rows)
    for imported in leo_tf_imports(path):
      target = _importable(imported, found)
      theirs = row_of(target, rows)
      if theirs is not None and theirs > mine:
        upward.append(f"{module} (row {mine}) imports {target} (row {theirs})")
  assert not upward, upward


def test_the_checks_see_an_upward_import(tmp_path):
  """The layering check itself: runtime/ sits above leo/, and a function-level import
  counts."""
  rows = module_map()
  assert row_of("runtime.threads", rows) < row_of("leo.model", rows)
  assert row_of("config_checks", rows) == 0 and row_of("cli.train", rows) == len(rows) - 1
  probe = tmp_path / "probe.py"
  probe.write_text("def f():\n  from leo_tf.leo.model import LEO\n")
  assert list(leo_tf_imports(str(probe))) == ["leo.model.LEO"]
  assert _importable("leo.model.LEO", modules()) == "leo.model"
