"""A meta-training run: its configuration, read from gin once and passed on as values,
and :func:`open_run`, how everything after training (evaluation, analysis, export)
opens a leo-train output directory."""

import dataclasses
import os
from typing import Any, Callable, Sequence, Tuple

import gin
import tensorflow as tf

from leo_tf import gin_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo import weights
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.leo.evaluation import EvalConfig
from leo_tf.leo.model import LEO
from leo_tf.runtime.strategy import make_strategy
from leo_tf.runtime.threads import Threads

WHICH = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class RunConfigs:
  """Everything gin configures for one run: the model, outer loop, test protocol,
  embeddings, thread pools and the ``make_strategy`` bindings."""
  model: LEOConfig
  train: TrainConfig
  eval: EvalConfig
  source: EmbeddingSource
  threads: Threads
  strategy_bindings: Tuple[Tuple[str, Any], ...] = ()

  @classmethod
  def from_gin(cls) -> "RunConfigs":
    """The configs the current gin state binds (gin_config.parse or .scoped)."""
    return cls(LEOConfig(), TrainConfig(), EvalConfig(), EmbeddingSource(), Threads(),
               tuple(sorted(gin.get_bindings(make_strategy).items())))

  def make_strategy(self) -> tf.distribute.Strategy:
    """The bound tf.distribute strategy (built late: it may start TF's runtime)."""
    return make_strategy(**dict(self.strategy_bindings))


def checkpoint_kind(run_dir: str, which: str = "best", fallback: bool = False) -> str:
  """``which`` checkpoint directory of a run; with ``fallback``, 'latest' when 'best' has
  none (a run without validation keeps no best). FileNotFoundError when none is left."""
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  for kind in ((which, "latest") if fallback and which == "best" else (which,)):
    if tf.train.latest_checkpoint(os.path.join(run_dir, kind)):
      return kind
  if fallback:
    raise FileNotFoundError(f"{run_dir} has no checkpoint in best/ or latest/")
  raise FileNotFoundError(f"no checkpoint in {os.path.join(run_dir, which)}")


@dataclasses.dataclass
class Run:
  """An opened leo-train output directory."""
  directory: str
  which: str            # the checkpoint directory the model came from
  configs: RunConfigs
  model: LEO
  dim: int              # embedding size the model was trained on

  @property
  def source(self) -> EmbeddingSource:
    return self.configs.source

  @property
  def checkpoint(self) -> str:
    return weights.latest(os.path.join(self.directory, self.which))

  def load(self, split: str) -> EmbeddingSet:
    """One split of the run's embeddings; they must have the model's size."""
    data = self.source.load(split)
    if data.dim != self.dim:
      weights.check_fits(self.checkpoint, self.configs.model, data.dim)
    return data


def open_run(run_dir: str, which: str = "best", bindings: Sequence[str] = (),
             gin_files: Sequence[str] = (), fallback: bool = False,
             log: Callable[[str], None] = print) -> Run:
  """Reads a run's saved config (plus ``gin_files`` and ``bindings``) and restores its
  ``which`` checkpoint ('best' or 'latest'; see :func:`checkpoint_kind` for ``fallback``).
  The embedding size comes from the checkpoint, so no embeddings are read."""
  configs = gin_config.read_saved(run_dir, RunConfigs.from_gin, bindings, gin_files)
  kind = checkpoint_kind(run_dir, which, fallback)
  dim = weights.checkpoint_dim(os.path.join(run_dir, kind))
  return Run(run_dir, kind, configs, weights.load_model(run_dir, configs.model, dim, kind, log),
             dim)
