"""A meta-training run: its configuration, read from gin once and passed on as values,
and :func:`open_run`, how everything after training (evaluation, analysis, export)
opens a leo-train output directory."""

import atexit
import dataclasses
import functools
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence, Tuple

import gin
import keras
import numpy as np
import tensorflow as tf

from leo_tf import saved_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import VariableEpisodes
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo import weights
from leo_tf.leo.end_to_end import EndToEndConfig, restore_backbone, write_embeddings
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.leo.evaluation import EvalConfig
from leo_tf.leo.model import LEO
from leo_tf.runtime.rundir import RunDir
from leo_tf.runtime.strategy import make_strategy
from leo_tf.runtime.threads import Threads


@dataclasses.dataclass(frozen=True)
class RunConfigs:
  """Everything gin configures for one run: the model, outer loop, test protocol,
  embeddings, thread pools, the ``make_strategy`` bindings, where variable episodes
  replace the model's N-way K-shot ones, and whether the backbone learns too."""
  model: LEOConfig
  train: TrainConfig
  eval: EvalConfig
  source: EmbeddingSource
  threads: Threads
  strategy_bindings: Tuple[Tuple[str, Any], ...] = ()
  episodes: VariableEpisodes = VariableEpisodes()
  end_to_end: EndToEndConfig = EndToEndConfig()

  @classmethod
  def from_gin(cls) -> "RunConfigs":
    """The configs the current gin state binds (gin_config.parse or .scoped)."""
    return cls(LEOConfig(), TrainConfig(), EvalConfig(), EmbeddingSource(), Threads(),
               tuple(sorted(gin.get_bindings(make_strategy).items())), VariableEpisodes(),
               EndToEndConfig())

  def make_strategy(self) -> tf.distribute.Strategy:
    """The bound tf.distribute strategy (built late: it may start TF's runtime)."""
    return make_strategy(**dict(self.strategy_bindings))


@dataclasses.dataclass
class Run:
  """An opened leo-train output directory."""
  directory: RunDir
  which: str            # the checkpoints the model came from: 'best' or 'latest'
  configs: RunConfigs
  model: LEO
  dim: int              # embedding size the model was trained on
  log: Callable[[str], None] = print
  # What open_run read the saved config with: re-reading it binds what extraction calls.
  bindings: Sequence[str] = ()
  gin_files: Sequence[str] = ()

  @functools.cached_property
  def source(self) -> EmbeddingSource:
    """The embeddings the run is tested on. An end-to-end run's are its own
    (``RunDir.embeddings``, of the tested checkpoint's backbone) when they are of this
    checkpoint's backbone; otherwise (``--which=latest`` after the best was tested, or a
    run killed before writing them) it extracts them anew, into a temporary folder."""
    e2e = self.configs.end_to_end
    own = e2e.source_of(self.configs.source, self.directory)
    if not e2e.enabled:
      return own
    backbone = self.backbone()
    if os.path.isdir(own.root) and os.path.isfile(self.directory.backbone):
      saved = keras.saving.load_model(self.directory.backbone, compile=False)
      if all(np.array_equal(a.numpy(), b.numpy())
             for a, b in zip(saved.weights, backbone.weights)):
        return own
    target = dataclasses.replace(own, root=tempfile.mkdtemp(prefix="leo_tf_embeddings_"))
    atexit.register(shutil.rmtree, target.root, True)
    self.log(f"[end-to-end] {self.directory.embeddings} is not of the {self.which} "
             f"checkpoint's backbone: extracting its embeddings into {target.root}")
    saved_config.read_saved(self.directory, lambda: write_embeddings(
        backbone, e2e.image_source, target), self.bindings, self.gin_files)
    return target

  def backbone(self) -> keras.Model:
    """An end-to-end run's backbone with the weights of its checkpoint (``which``): the
    saved ``RunDir.backbone``, or the pre-trained one if the run never saved it."""
    path = self.directory.backbone
    if not os.path.isfile(path):
      path = self.configs.end_to_end.backbone_file(self.configs.source)
    return restore_backbone(keras.saving.load_model(path, compile=False), self.checkpoint)

  @property
  def checkpoint(self) -> str:
    return self.directory.newest(self.which)

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
  ``which`` checkpoint ('best' or 'latest'; see ``RunDir.choose`` for ``fallback``).
  The embedding size comes from the checkpoint, so no embeddings are read."""
  run = RunDir(run_dir)
  configs = saved_config.read_saved(run, RunConfigs.from_gin, bindings, gin_files)
  kind = run.choose(which, fallback)
  dim = weights.checkpoint_dim(run.newest(kind))
  return Run(run, kind, configs, weights.load_model(run, configs.model, dim, kind, log), dim,
             log, tuple(bindings), tuple(gin_files))
