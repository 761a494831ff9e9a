"""LEO weights in tf.train checkpoints: restoring a model for inference, the embedding size.

Serving, analysis and evaluation read weights here without importing the training
module; the trainer writes them (with its optimizer and counters) and restores through
the same checks.
"""

import os
from typing import Callable, Dict

import tensorflow as tf

from leo_tf import checkpoints
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.model import LEO, build_leo

# The [dim] fine-tuning step sizes: their length is the embedding size d.
_DIM_WEIGHT = "finetune_lr"


def dim_hint(dim: int) -> Callable[[Dict[str, tuple]], str]:
  """Names the embedding size when the checkpoint's finetune_lr [dim] says it differs."""
  def hint(stored):
    shape = stored.get(_DIM_WEIGHT)
    if shape and shape[0] != dim:
      return (f"The checkpoint was trained on {shape[0]}-dimensional embeddings; these "
              f"have {dim} dimensions")
    return "Check the LEOConfig bindings (latent_size, num_classes, hidden sizes)"
  return hint


def latest(directory: str) -> str:
  """The newest checkpoint prefix in ``directory``; FileNotFoundError if none."""
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  return path


def checkpoint_dim(directory: str) -> int:
  """The embedding size d of the newest checkpoint in ``directory``."""
  path = latest(directory)
  shape = checkpoints.stored_shapes(path).get(_DIM_WEIGHT)
  if shape is None or len(shape) != 1:
    raise checkpoints.CheckpointMismatchError(
        f"{path} is not a LEO checkpoint (it has no {_DIM_WEIGHT} weight)")
  return int(shape[0])


def check_fits(path: str, model_config: LEOConfig, dim: int) -> None:
  """CheckpointMismatchError unless checkpoint ``path`` fits a model of ``model_config``
  on ``dim``-dimensional embeddings."""
  variables = checkpoints.named_variables(build_leo(model_config, dim))
  checkpoints.check_compatible(path, variables, dim_hint(dim))


def load_model(checkpoint_dir: str, model_config: LEOConfig, dim: int,
               which: str = "best", log: Callable[[str], None] = print) -> LEO:
  """A model restored from ``<checkpoint_dir>/<best|latest>`` (its newest readable one).

  Every weight is restored or the call fails: CheckpointMismatchError names the shapes
  that differ from ``model_config`` / ``dim``.
  """
  model = build_leo(model_config, dim)
  directory = os.path.join(checkpoint_dir, which)
  variables = checkpoints.named_variables(model)
  # Only the weights: the optimizer and counters in the file are left unread.
  reader = tf.train.Checkpoint(**{checkpoints.MODEL_VARIABLES: variables})
  path = checkpoints.restore_latest(
      _Partial(reader), directory,
      verify=lambda p: checkpoints.check_compatible(p, variables, dim_hint(dim)),
      log=log)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  return model


class _Partial:
  """A checkpoint whose restore reads only the objects it tracks, and checks them all."""

  def __init__(self, checkpoint: tf.train.Checkpoint):
    self._checkpoint = checkpoint

  def restore(self, path):
    status = self._checkpoint.restore(path)
    status.assert_existing_objects_matched()
    return status.expect_partial()
