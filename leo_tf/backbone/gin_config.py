"""Finding and parsing the shipped .gin files (used by the command-line entry points)."""

import os
from typing import Optional, Sequence

import gin

# gin/ sits beside the package in a source checkout; LEO_TF_GIN_DIR overrides it.
GIN_DIR = os.environ.get(
    "LEO_TF_GIN_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "gin")))


class GinConfigError(ValueError):
  """A gin file is missing or a binding does not parse."""


def add_search_path() -> None:
  """Lets files and ``include`` lines name shipped files relative to gin/."""
  if os.path.isdir(GIN_DIR) and GIN_DIR not in _search_paths():
    gin.add_config_file_search_path(GIN_DIR)


def _search_paths():
  return getattr(gin.config, "_LOCATION_PREFIXES", [])


def resolve(path: str) -> str:
  """``path`` as given, else relative to gin/; a clear error when neither exists."""
  for candidate in (path, os.path.join(GIN_DIR, path)):
    if os.path.isfile(candidate):
      return candidate
  raise GinConfigError(f"gin file not found: {path!r} (also looked in {GIN_DIR})")


def parse(files: Sequence[str], bindings: Optional[Sequence[str]] = None) -> None:
  """Parses ``files`` then ``bindings`` (later ones win), with errors that name the input."""
  add_search_path()
  resolved = [resolve(f) for f in files]
  try:
    gin.parse_config_files_and_bindings(resolved, list(bindings or []))
  except (IOError, ValueError, SyntaxError, ImportError) as e:
    raise GinConfigError(f"bad gin configuration ({', '.join(resolved) or 'no files'}; "
                         f"bindings {list(bindings or [])}): {e}") from e
