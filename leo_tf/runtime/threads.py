"""TensorFlow's CPU thread pools for meta-training and evaluation.

A LEO step is ~1,000 small ops (a [60 x 64] x [64 x 1280] product takes ~50 us) with
many independent chains: the random draws, the encoder, the query branch, the
per-variable optimizer updates. Splitting each small op over several threads
(intra-op parallelism) costs more than it gains; running independent ops side by side
(inter-op parallelism) uses the cores better. On our 2-core machines
``intra_op=1, inter_op=2`` made a meta-training step 1.2-1.3x faster than TF's default
(docs/performance.md). Backbone pre-training (large convolutions) wants the opposite,
so leo-pretrain leaves TF's defaults alone.

TF fixes its thread pools when it starts executing, so :func:`configure` must run
before the first op; later it only logs that the defaults stay in effect.
"""

import dataclasses
import os
from typing import Callable

import gin
import tensorflow as tf

from leo_tf.config_checks import check_types, require_at_least


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Threads:
  """Thread-pool sizes; 0 leaves TF's default (one thread per core for each pool).

  Attributes:
    intra_op: threads one op may split its work over.
    inter_op: ops run concurrently; -1 means the number of usable cores.
  """
  intra_op: int = 1
  inter_op: int = -1

  def __post_init__(self):
    check_types(self)
    require_at_least(self, 0, "intra_op")
    require_at_least(self, -1, "inter_op")

  def resolved(self):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return self.intra_op, (cores if self.inter_op == -1 else self.inter_op)


def configure(threads: Threads = None, log: Callable[[str], None] = print) -> bool:
  """Applies ``threads`` (gin's binding by default); False when TF already started."""
  intra, inter = (threads or Threads()).resolved()
  config = tf.config.threading
  if (config.get_intra_op_parallelism_threads() == intra and
      config.get_inter_op_parallelism_threads() == inter):
    return True
  try:
    if intra:
      config.set_intra_op_parallelism_threads(intra)
    if inter:
      config.set_inter_op_parallelism_threads(inter)
  except RuntimeError:
    log(f"[threads] TensorFlow started before its thread pools were set: keeping "
        f"intra_op={config.get_intra_op_parallelism_threads()}, "
        f"inter_op={config.get_inter_op_parallelism_threads()} (0: TF's default), "
        f"not intra_op={intra}, inter_op={inter}")
    return False
  return True
