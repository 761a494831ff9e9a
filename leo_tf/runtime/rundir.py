"""A run directory: every path a meta-training run holds is named here, and only here
(what each holds and who writes it: docs/design.md, "Data flow"). A tuning trial's run is
``<trial>/leo``; leo-pretrain's model directory has the config files and worker folders.
"""

import os
from typing import Optional

WHICH = ("best", "latest")


class RunDir(os.PathLike):
  """The paths of one run directory (a str or path-like; ``os.fspath`` gives it back)."""

  def __init__(self, path):
    self.path = os.fspath(path)

  def __fspath__(self) -> str:
    return self.path

  def __str__(self) -> str:
    return self.path

  def _join(self, *names) -> str:
    return os.path.join(self.path, *names)

  config = property(lambda self: self._join("config.gin"))
  operative_config = property(lambda self: self._join("operative_config.gin"))
  tensorboard = property(lambda self: self._join("tensorboard"))
  best_record = property(lambda self: self._join("best", "best.json"))
  compare = property(lambda self: self._join("compare"))
  latents_tsne = property(lambda self: self._join("latents_tsne.png"))
  result = property(lambda self: self._join("result.json"))

  def checkpoints(self, which: str) -> str:
    """The folder of the ``which`` ('best' or 'latest') checkpoints."""
    if which not in WHICH:
      raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    return self._join(which)

  @staticmethod
  def ablation(compare_dir: str, name: str) -> "RunDir":
    """The run of ablation ``name`` that a comparison writing to ``compare_dir`` trains."""
    return RunDir(os.path.join(compare_dir, "ablations", name))

  @staticmethod
  def trial(trial_dir: str) -> "RunDir":
    """The run of a keras-tuner trial (its folder also holds keras-tuner's files)."""
    return RunDir(os.path.join(trial_dir, "leo"))

  def for_process(self, strategy) -> "RunDir":
    """Where this process writes checkpoints: saving a multi-worker model is collective,
    so every worker writes; the chief here, the others into ``<task>_<id>/``."""
    from leo_tf.runtime import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    if strategy_lib.is_chief(strategy):
      return self
    return RunDir(self._join("%s_%d" % strategy_lib.task_info(strategy)))

  def newest(self, which: str) -> Optional[str]:
    """The checkpoint TF's state file names newest in ``which``, if its index exists:
    tf.train.latest_checkpoint, without reading the path as a glob pattern."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    state = tf.train.get_checkpoint_state(self.checkpoints(which))
    path = state.model_checkpoint_path if state else None
    return path if path and os.path.isfile(path + ".index") else None

  def choose(self, which: str = "best", fallback: bool = False) -> str:
    """The checkpoints to read: ``which``; with ``fallback``, 'latest' when 'best' has
    none (a run without validation keeps no best). FileNotFoundError when none is left."""
    for kind in ((which, "latest") if fallback and which == "best" else (which,)):
      if self.newest(kind):
        return kind
    if fallback:
      raise FileNotFoundError(f"{self.path} has no checkpoint in best/ or latest/")
    raise FileNotFoundError(f"no checkpoint in {self.checkpoints(which)}")
