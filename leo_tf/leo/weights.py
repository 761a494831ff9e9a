"""LEO weights in tf.train checkpoints: restoring a model for inference, the embedding size.

Serving, analysis and evaluation read weights here without importing the training
module; the trainer writes them (with its optimizer and counters) and restores through
the same checks.
"""

from typing import Callable, Dict

import tensorflow as tf

from leo_tf import checkpoints
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.model import LEO, build_leo
from leo_tf.runtime.rundir import RunDir

# The [dim] fine-tuning step sizes: their length is the embedding size d.
_DIM_WEIGHT = "finetune_lr"


def check_compatible(path: str, variables: Dict[str, tf.Variable], dim: int) -> None:
  """checkpoints.check_compatible, naming the embedding size when the checkpoint's
  finetune_lr [dim] says it differs."""
  def hint(stored):
    shape = stored.get(_DIM_WEIGHT)
    if shape and shape[0] != dim:
      return (f"The checkpoint was trained on {shape[0]}-dimensional embeddings; these "
              f"have {dim} dimensions")
    return "Check the LEOConfig bindings (latent_size, num_classes, hidden sizes)"
  checkpoints.check_compatible(path, variables, hint)


def checkpoint_dim(path: str) -> int:
  """The embedding size d of checkpoint ``path``."""
  shape = checkpoints.stored_shapes(path).get(_DIM_WEIGHT)
  if shape is None or len(shape) != 1:
    raise checkpoints.CheckpointMismatchError(
        f"{path} is not a LEO checkpoint (it has no {_DIM_WEIGHT} weight)")
  return int(shape[0])


def check_fits(path: str, model_config: LEOConfig, dim: int) -> None:
  """CheckpointMismatchError unless checkpoint ``path`` fits a model of ``model_config``
  on ``dim``-dimensional embeddings."""
  check_compatible(path, checkpoints.named_variables(build_leo(model_config, dim)), dim)


def load_model(checkpoint_dir, model_config: LEOConfig, dim: int,
               which: str = "best", log: Callable[[str], None] = print) -> LEO:
  """A model restored from the newest readable of a run's (a directory or RunDir)
  ``which`` checkpoints, 'best' or 'latest'. Every weight is restored or the call fails:
  CheckpointMismatchError names the shapes that differ from ``model_config`` / ``dim``."""
  model = build_leo(model_config, dim)
  restore_weights(model, checkpoint_dir, which, log)
  return model


def restore_weights(model: LEO, checkpoint_dir, which: str = "best",
                    log: Callable[[str], None] = print) -> str:
  """Restores every weight of ``model`` from the newest readable of a run's ``which``
  checkpoints (checked as :func:`load_model` says); returns the checkpoint's path."""
  directory = RunDir(checkpoint_dir).checkpoints(which)
  variables = checkpoints.named_variables(model)
  path = checkpoints.restore_latest(
      _WeightsOnly(**{checkpoints.MODEL_VARIABLES: variables}), directory,
      verify=lambda p: check_compatible(p, variables, model.dim),
      log=log)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  return path


class _WeightsOnly(tf.train.Checkpoint):
  """Restores only the weights, each one checked: the optimizer and counters in the file
  are left unread."""

  def restore(self, path):
    status = super().restore(path)
    status.assert_existing_objects_matched()
    return status.expect_partial()
