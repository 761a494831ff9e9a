"""A run directory: every path a meta-training run holds is named here, and only here
(what each holds and who writes it: docs/design.md, "Data flow"). A tuning trial's run is
``<trial>/leo``; leo-pretrain's model directory has the config files and worker folders.
TensorFlow reads a checkpoint path as a glob pattern (a ``[`` in it hides every
checkpoint, a ``*`` lets it delete another run's files), so such a path is refused before
any work; and a run never writes through a link out of it.
"""

import os
from typing import Optional

from leo_tf.runtime import outputs

WHICH = ("best", "latest")
GLOB_CHARACTERS = "[]*?\\"
# The folders a trainer writes into: each must be a folder of this run.
_FOLDERS = ("latest", "best", "tensorboard")


class RunDir(os.PathLike):
  """The paths of one run directory (a str or path-like; ``os.fspath`` gives it back)."""

  def __init__(self, path, what: str = "run directory"):
    self.path, self.what = outputs.a_path(path, what), what
    bad = sorted(set(GLOB_CHARACTERS) & set(self.path))
    if bad:
      raise outputs.OutputPathError(
          f"{what}: {self.path} contains {' '.join(bad)}, which TensorFlow reads as a glob "
          "pattern in checkpoint paths; choose a directory without [ ] * ? \\")
    try:
      self.path.encode("utf-8")
    except UnicodeEncodeError:  # bytes of another locale's encoding
      shown = os.fsencode(self.path).decode("utf-8", "backslashreplace")
      raise outputs.OutputPathError(
          f"{what}: {shown} is not a UTF-8 path, and TensorFlow opens files by UTF-8 "
          "names; rename it or choose another directory") from None

  def __fspath__(self) -> str:
    return self.path

  __str__ = __fspath__

  def _join(self, *names) -> str:
    return os.path.join(self.path, *names)

  config = property(lambda self: self._join("config.gin"))
  operative_config = property(lambda self: self._join("operative_config.gin"))
  tensorboard = property(lambda self: self._join("tensorboard"))
  best_record = property(lambda self: self._join("best", "best.json"))
  compare = property(lambda self: self._join("compare"))
  latents_tsne = property(lambda self: self._join("latents_tsne.png"))
  result = property(lambda self: self._join("result.json"))
  # End-to-end LEO: the meta-trained backbone and its embeddings of every split, laid out
  # as EmbeddingSource reads them (<embeddings>/<folder>/<crop>/<split>_embeddings.pkl).
  backbone = property(lambda self: self._join("backbone.keras"))
  embeddings = property(lambda self: self._join("embeddings"))

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

  def prepare(self) -> "RunDir":
    """Checks before any work that this process can write the run: the directory is
    writable (created if missing) and its folders are folders inside it."""
    outputs.writable_directory(self.path, self.what)
    root = os.path.realpath(self.path)
    for name in _FOLDERS:
      path = self._join(name)
      target = os.path.realpath(path)
      if os.path.islink(path) and os.path.commonpath([root, target]) != root:
        raise outputs.OutputPathError(
            f"{self.what}: {path} is a link to {target}, outside the run directory; a run "
            "writes only into itself: replace the link with a folder")
      if os.path.lexists(path) and not os.path.isdir(path):
        raise outputs.OutputPathError(
            f"{self.what}: {path} is a file, not a folder; move it away (the run writes "
            "into that folder)")
    return self
