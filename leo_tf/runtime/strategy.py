"""The tf.distribute strategy that pre-training runs under, chosen in gin.

'default' is the one-device strategy already in effect, 'mirrored' copies the model to
every local device (or the ``devices`` given), 'multi_worker' synchronises workers
described by the TF_CONFIG environment variable.
"""

import json
import os
from typing import List, Optional, Sequence

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


def worker_tag(strategy: tf.distribute.Strategy) -> str:
  """'' on the chief, '[worker_1] ' on the others: the prefix of a worker's log lines."""
  return "" if is_chief(strategy) else "[%s_%d] " % task_info(strategy)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def from_chief(strategy: tf.distribute.Strategy, values: Sequence[float]) -> List[float]:
  """The chief's ``values`` on every worker (one all-reduce; ``values`` elsewhere).

  Each worker decides alone whether to save a checkpoint or stop, so a decision read
  from files or measured locally must be the chief's, or the workers' collectives part.
  Global replica 0 is the chief's first device (MultiWorkerMirroredStrategy numbers the
  chief's devices first), so a SUM over replicas of "mine on replica 0, else 0" is it.
  """
  if not is_multi_worker(strategy):
    return list(values)
  local = tf.constant(list(values), tf.float64)
  def share():
    first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
    return tf.where(first, local, tf.zeros_like(local))
  total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(share), axis=None)
  return total.numpy().tolist()


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
  """True on every worker when ``flag`` is True on any (one all-reduce)."""
  if not is_multi_worker(strategy):
    return bool(flag)
  local = tf.constant(float(flag), tf.float64)
  total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: local), axis=None)
  return float(total) > 0
