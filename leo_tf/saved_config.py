"""Configs read from a run directory are data, not code.

A gin file can run code: ``import os`` plus ``from __gin__ import dynamic_registration``
makes ``@os.system()`` a call, and ``@anything()`` evaluates a configurable. That is
fine for a file the user passes with ``--gin_file`` (it is theirs, like a script), but
``leo-eval``, ``leo-export``, ``leo-visualize`` and ``leo-train``'s resume read
``<run>/config.gin`` from a directory that may have been downloaded. So before gin sees
a saved config, :func:`check` parses it with gin's own parser (which evaluates nothing)
and refuses, with the file and line:

- any ``import`` / ``from ... import`` (``__gin__`` features included) except
  ``import`` of a leo_tf module that registers configurables (``gin.config_str()``
  repeats those of the files the run was configured with), and any ``include``;
- bindings of, or references to, any configurable that leo_tf does not define;
- evaluated references ``@name()``: a saved config binds values, it calls nothing.

What remains is literals, macros and references to leo_tf's own configurables, exactly
what ``gin.config_str()`` writes for a leo-train run. Library code reads a run's config
through :func:`read_saved` (or :func:`saved_files` inside ``gin_config.scoped``).
"""

import io
import os
from typing import Callable, List, Sequence, Set, TypeVar

import gin
from gin import config_parser

from leo_tf import gin_config
from leo_tf.runtime.rundir import RunDir

T = TypeVar("T")


class UnsafeConfigError(gin_config.GinConfigError):
  """A saved config holds something other than data for leo_tf's configurables."""


def allowed_configurables() -> Set[str]:
  """Full names (``leo_tf.leo.config.LEOConfig``) of the configurables leo_tf defines."""
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  return {name for name, configurable in registry.items()
          if getattr(configurable.wrapped, "__module__", "").startswith("leo_tf.")}


def _known(selector: str, allowed: Set[str]) -> bool:
  """``selector`` as gin matches it: the full name or any dotted suffix of it."""
  return any(name == selector or name.endswith("." + selector) for name in allowed)


class _Recorder(config_parser.ParserDelegate):
  """Builds nothing: records every ``@reference`` for the statement being parsed."""

  def __init__(self):
    self.references: List[tuple] = []

  def configurable_reference(self, scoped_configurable_name, evaluate):
    self.references.append((scoped_configurable_name, evaluate))
    return None

  def macro(self, macro_name):
    return None


def saved_files(run, extra_files: Sequence[str] = ()) -> list:
  """The config a run (a directory or RunDir) saved, read and checked, then
  ``extra_files`` on top: the ``gin_files`` of ``gin_config.scoped``."""
  path = RunDir(run).config
  if not os.path.isfile(path):
    raise gin_config.GinConfigError(f"{os.fspath(run)} has no {os.path.basename(path)}: "
                                    "is it a leo-train output directory?")
  return [read(path)] + list(extra_files)


def read_saved(run, build: Callable[[], T], bindings: Sequence[str] = (),
               extra_files: Sequence[str] = ()) -> T:
  """``build()`` under a run's saved config with ``extra_files`` and ``bindings`` on top
  (e.g. ``build=CompareConfig``); the caller's gin state is left as it was."""
  with gin_config.scoped(saved_files(run, extra_files), bindings):
    return build()


def read(path: str) -> io.StringIO:
  """``path``'s text, checked by :func:`check`, as a stream gin parses under its name
  (the text checked is the text parsed, whatever happens to the file meanwhile)."""
  gin_config.register_configurables()  # what the check allows
  with open(path, encoding="utf-8") as f:
    text = f.read()
  check(text, path)
  stream = io.StringIO(text)
  stream.name = path
  return stream


def check(text: str, path: str) -> None:
  """Raises UnsafeConfigError naming ``path`` and the line unless ``text`` is data (call
  after leo_tf's configurables are registered)."""
  allowed = allowed_configurables()
  recorder = _Recorder()
  stream = io.StringIO(text)
  stream.name = path
  try:
    for statement in config_parser.ConfigParser(stream, recorder):
      where = f"{path}, line {statement.location.line_num}"
      content = statement.location.line_content.strip()
      if isinstance(statement, config_parser.ImportStatement):
        # Only the modules whose import registers leo_tf's configurables.
        if (statement.is_from or statement.alias
            or statement.module not in gin_config.CONFIGURABLE_MODULES):
          raise UnsafeConfigError(
              f"{where}: a saved run config may import only leo_tf's own modules "
              f"(`{content}`); refusing to read it, nothing in it ran")
        continue
      if isinstance(statement, config_parser.IncludeStatement):
        raise UnsafeConfigError(
            f"{where}: a saved run config may not include other files (`{content}`)")
      selector = getattr(statement, "selector", "")
      # A macro definition (`NAME = value`) has no parameter name; it binds no configurable.
      is_macro = (isinstance(statement, config_parser.BindingStatement) and
                  not statement.arg_name and "." not in selector)
      if selector and not is_macro and not _known(selector, allowed):
        raise UnsafeConfigError(
            f"{where}: '{selector}' is not one of leo_tf's configurables; a saved run "
            f"config may bind only those (`{content}`)")
      for name, evaluate in recorder.references:
        target = name.split("/")[-1]
        if evaluate:
          raise UnsafeConfigError(
              f"{where}: a saved run config may not call anything (`@{name}()`)")
        if not _known(target, allowed):
          raise UnsafeConfigError(
              f"{where}: '@{name}' is not one of leo_tf's configurables; a saved run "
              "config may refer only to those")
      recorder.references.clear()
  except UnsafeConfigError:
    raise
  except Exception as e:  # gin's parser: SyntaxError, tokenize.TokenError, ValueError
    raise UnsafeConfigError(gin_config._one_line(e, path)) from None  # pylint: disable=protected-access
