"""Parsing gin files: search paths, registration of configurables, clear errors.

Gin is global state, so it is parsed in two ways only:
- :func:`parse`, by the entry points (``leo_tf/cli``) once, before they build configs;
- :func:`scoped`, by library code that reads another configuration (a saved run, an
  ablation, a tuning trial): it parses into a fresh gin state for the duration of a
  ``with`` block and gives the caller's state back afterwards, untouched.

Gin resolves ``include`` lines against its search path: we add the directory of each
file being parsed and the shipped ``gin/`` directory, so experiment files can
include building blocks as ``include 'models/leo_final.gin'``.
"""

import contextlib
import importlib
import importlib.resources
import io
import os
import re
import tokenize
from typing import Iterator, Sequence, Union

import gin

from leo_tf.runtime import files as files_lib
from leo_tf.runtime import paths

# A gin file: its path, or a text stream with a ``name`` (a checked saved config).
GinFile = Union[str, io.TextIOBase]

# Modules whose import registers gin configurables: a saved config.gin may bind any.
CONFIGURABLE_MODULES = (
    "leo_tf.leo.config",
    "leo_tf.leo.evaluation",
    "leo_tf.leo.experiment",
    "leo_tf.data.source",
    "leo_tf.serving.graph",
    "leo_tf.data.glyphs",
    "leo_tf.data.typefaces",
    "leo_tf.data.images",
    "leo_tf.runtime.threads",
    "leo_tf.runtime.strategy",
    "leo_tf.backbone.wrn",
    "leo_tf.backbone.pretrain",
    "leo_tf.backbone.embed",
    "leo_tf.backbone.pipeline",
    "leo_tf.tuning.hypermodel",
    "leo_tf.analysis.compare_config",
    "leo_tf.analysis.compare",
)

# The shipped gin files: package data (leo_tf/gin links to the top-level gin/ folder).
GIN_DIR = str(importlib.resources.files("leo_tf") / "gin")


class GinConfigError(ValueError):
  """A gin file or binding could not be parsed; the message names which and why."""


_UNBOUND_MACRO = re.compile(r"No bindings specified for '([^'/]+)/gin\.macro'")
_LOCATION = re.compile(r'\s*In file "(?P<file>[^"]*)", line (?P<line>\d+)\n\s*(?P<text>.*)')


def _one_line(error: Exception, source: str) -> str:
  """Gin's multi-line message as one line naming the file, the line and the binding.

  The innermost file is named (an ``include``d file's typo is reported in that file).
  """
  text = str(error)
  if isinstance(error, SyntaxError) and error.lineno:
    return f"{error.filename or source}, line {error.lineno}: syntax error: {error.msg}"
  if isinstance(error, tokenize.TokenError) and len(error.args) == 2:
    return f"{source}, line {error.args[1][0]}: syntax error: {error.args[0]}"
  match = _LOCATION.search(text)
  text = re.split(r"\n\s*In bindings string", text)[0]
  head = " ".join(text[:match.start()].split()) if match else " ".join(text.split())
  if not match:
    return f"{source}: {head}"
  where = match.group("file") or source
  if os.path.basename(where) != os.path.basename(source):
    where += f" (included from {source})"
  return (f"{where}, line {match.group('line')}: {head} "
          f"(in `{match.group('text').strip()}`)")


def register_configurables() -> None:
  for name in CONFIGURABLE_MODULES:
    importlib.import_module(name)


def resolve_gin_file(path: str) -> str:
  """A gin file by path, or relative to the shipped gin/ directory."""
  for candidate in (path, os.path.join(GIN_DIR, path)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise GinConfigError(f"gin file not found: {path} (also looked in {GIN_DIR})")


def parse(gin_files: Sequence[GinFile] = (), bindings: Sequence[str] = ()) -> None:
  """Parses files then bindings (later ones override earlier) into a cleared gin state.

  For the entry points; library code reads configurations through :func:`scoped`. A
  file may be given as a text stream with a ``name``: a run's saved config, read and
  checked by ``leo_tf.saved_config``, so the text checked is the text parsed.
  """
  gin.clear_config()          # unlocks a finalized config, so new modules can register
  register_configurables()
  # Look in gin/ first: gin logs an error for every prefix it tries that misses.
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  if GIN_DIR not in prefixes:
    prefixes.insert(0, GIN_DIR)
  files = [f if isinstance(f, io.TextIOBase) else resolve_gin_file(f) for f in gin_files]
  # An include resolves next to the including file too (not only against the cwd).
  for directory in dict.fromkeys(os.path.dirname(f) for f in files if isinstance(f, str)):
    if directory not in prefixes:
      prefixes.append(directory)
  for file in files:
    try:
      gin.parse_config_file(file) if isinstance(file, str) else gin.parse_config(file)
    except Exception as e:  # gin raises ValueError/SyntaxError/KeyError/...
      raise GinConfigError(_one_line(e, getattr(file, "name", file))) from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except Exception as e:
      message = _one_line(e, "<binding>").split(": ", 1)[-1]
      raise GinConfigError(f"command-line binding {binding!r}: {message}") from e
  paths.bind_absolute()  # what a run saves must name the same files from anywhere
  try:
    gin.finalize()
  except ValueError as e:  # gin lists the whole config after its message
    unbound = _UNBOUND_MACRO.search(str(e))
    if not unbound:
      raise
    name = unbound.group(1)
    raise GinConfigError(f"{name} is not bound: give it a value, e.g. "
                         f"--gin_bindings=\"{name}='...'\" (a gin macro the files use)"
                         ) from None


def save_config(path: str, operative: bool = False) -> str:
  """Writes the full (or operative) config to ``path`` (a RunDir's); returns it."""
  text = gin.operative_config_str() if operative else gin.config_str()
  return files_lib.atomic_write(path, text)


# What gin.clear_config() empties; a scope saves and restores exactly these.
_STATE = ("_CONFIG", "_SINGLETONS", "_IMPORTS", "_OPERATIVE_CONFIG")


@contextlib.contextmanager
def scoped(gin_files: Sequence[GinFile] = (), bindings: Sequence[str] = ()
           ) -> Iterator[None]:
  """Parses ``gin_files`` and ``bindings`` (as :func:`parse`) into a fresh gin state for
  the ``with`` block; when it ends (or raises), the caller's gin state is restored."""
  module = gin.config
  state = {name: getattr(module, name).copy() for name in _STATE}
  locked = gin.config_is_locked()
  try:
    parse(gin_files, bindings)
    yield
  finally:
    gin.clear_config()
    for name, value in state.items():
      getattr(module, name).update(value)
    module._set_config_is_locked(locked)  # pylint: disable=protected-access
