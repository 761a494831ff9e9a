"""Where data lives (``$LEO_TF_DATA``), and paths that mean the same from any folder.

Shipped gin files put the data they read or build (embeddings, rendered images) under
``$LEO_TF_DATA``, by default ``~/.cache/leo_tf`` (``$XDG_CACHE_HOME/leo_tf``), never under
the working directory. When a command parses its configuration, every path parameter
is made absolute (``$LEO_TF_DATA``, other variables and ``~`` expanded, a relative path
taken from the working directory), so the ``config.gin`` a run saves names the same
files wherever, and with whatever environment, it is read again.
"""

import os
import re

import gin

DATA_ENV = "LEO_TF_DATA"

# The gin parameters (and macros) that hold a file or directory path.
PATH_PARAMETERS = (
    "%IMAGES_ROOT",
    "EmbeddingSource.root",
    "EmbeddingSource.derived_from",
    "image_source.root",
    "build_glyph_embeddings.model_dir",
    "build_image_embeddings.model_dir",
    "run_pretraining.model_dir",
    "run_extraction.model_dir",
    "run_extraction.root",
    "run_experiment.output_dir",
    "TuneConfig.output_dir",
    "EndToEndConfig.backbone",
    "TrainConfig.warm_start",
)

_DATA_VARIABLE = re.compile(r"\$(\{LEO_TF_DATA\}|LEO_TF_DATA\b)")


def data_dir() -> str:
  """``$LEO_TF_DATA``, else ``$XDG_CACHE_HOME/leo_tf``, else ``~/.cache/leo_tf``."""
  configured = os.environ.get(DATA_ENV)
  if configured:
    return os.path.abspath(os.path.expanduser(configured))
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.abspath(os.path.join(os.path.expanduser(cache), "leo_tf"))


def resolve(path: str) -> str:
  """``path`` with ``$LEO_TF_DATA`` (set or not), other variables and ``~`` expanded,
  absolute; URLs such as ``gs://bucket/dir`` are left as they are."""
  if "://" in path:
    return path
  path = _DATA_VARIABLE.sub(lambda _: data_dir(), path)
  return os.path.abspath(os.path.expanduser(os.path.expandvars(path)))


def bind_absolute(parameters=PATH_PARAMETERS) -> None:
  """Rebinds each bound path parameter to its :func:`resolve`d form (before finalize)."""
  for name in parameters:
    try:
      value = gin.query_parameter(name)
    except ValueError:  # not bound, or its configurable is not registered
      continue
    if isinstance(value, str):
      gin.bind_parameter(name, resolve(value))
