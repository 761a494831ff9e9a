"""The tf.distribute strategy that pre-training runs under, chosen in gin.

'default' is the one-device strategy already in effect, 'mirrored' copies the model to
every local device (or the ``devices`` given), 'multi_worker' synchronises workers
described by the TF_CONFIG environment variable.
"""

import json
import os
from typing import Optional, Sequence

import gin
import tensorflow as tf

KINDS = ("default", "mirrored", "multi_worker")


@gin.configurable
def make_strategy(kind: str = "default",
                  devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
  if kind == "default":
    return tf.distribute.get_strategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
  if kind == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError(
          "strategy 'multi_worker' needs the TF_CONFIG environment variable "
          "(cluster {'worker': [host:port, ...]} and this process's task index)")
    # RING collectives run on CPU; AUTO would pick NCCL where there are GPUs.
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"unknown strategy kind {kind!r}; choose one of {KINDS}")


def task_info(strategy: tf.distribute.Strategy):
  """(task_type, task_id) of this process; ('worker', 0) outside a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "worker", 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  task_type, task_id = task_info(strategy)
  if task_type == "chief":
    return True
  has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return task_type == "worker" and task_id == 0 and not has_chief


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes checkpoints.

  Saving a multi-worker model is collective, so every worker must write; only the
  chief writes into ``model_dir`` itself, the others into ``model_dir/<type>_<id>``.
  """
  if is_chief(strategy):
    return model_dir
  task_type, task_id = task_info(strategy)
  return os.path.join(model_dir, f"{task_type}_{task_id}")
