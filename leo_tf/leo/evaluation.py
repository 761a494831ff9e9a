"""Few-shot evaluation: mean accuracy over many episodes with a 95% confidence interval."""

import dataclasses
import math
import time
from typing import Callable, Dict, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf

from leo_tf.data.episodes import EpisodeSampler
from leo_tf.config_checks import ConfigError, check_types, require_at_least


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Test protocol. ``num_queries=None``: every non-shot example of a class is a query."""
  num_episodes: int = 10000
  num_queries: Optional[int] = None
  batch_size: int = 20
  seed: int = 20260
  split: str = "test"

  def __post_init__(self):
    check_types(self)
    require_at_least(self, 1, "num_episodes", "batch_size")
    if self.num_queries is not None and self.num_queries < 1:
      raise ConfigError(f"EvalConfig.num_queries must be >= 1 or None (every remaining "
                        f"example), got {self.num_queries}")


@dataclasses.dataclass
class EvalResult:
  accuracies: np.ndarray  # one per episode

  @property
  def mean(self) -> float:
    return float(np.mean(self.accuracies))

  @property
  def ci95(self) -> float:
    """Half-width of the normal-approximation 95% interval of the mean."""
    n = self.accuracies.size
    if n < 2:
      return float("nan")
    return float(1.96 * np.std(self.accuracies, ddof=1) / math.sqrt(n))

  def __str__(self):
    return f"{100 * self.mean:.2f} +- {100 * self.ci95:.2f} % ({self.accuracies.size} episodes)"


def run_episodes(step: Callable, sampler: EpisodeSampler, num_episodes: int,
                 batch_size: int, seed: int, support_only: bool = False,
                 keep: Optional[Sequence[str]] = None,
                 each: Optional[Callable[[Dict, int], None]] = None) -> Dict[str, np.ndarray]:
  """The evaluation loop: ``step(batch, index) -> {name: [B, ...] tensor}`` over the first
  ``num_episodes`` episodes of the seeded stream (``support_only``: the same episodes from
  ``sampler.support_dataset``, no queries; the index seeds what a step draws).

  Outputs are cut to the stream's episodes as numpy arrays. ``each(outputs, count)`` sees
  every batch (pooled statistics, progress); the outputs named in ``keep`` (all by
  default) are returned, concatenated over episodes.
  """
  kept = {}
  for i, batch, count in sampler.batches(num_episodes, batch_size, seed, support_only):
    outputs = {k: v.numpy()[:count] for k, v in step(batch, tf.constant(i, tf.int64)).items()}
    if each:
      each(outputs, count)
    for name in outputs if keep is None else keep:
      kept.setdefault(name, []).append(outputs[name])
  return {name: np.concatenate(values) for name, values in kept.items()}


def episode_accuracies(predict: Callable, sampler: EpisodeSampler, num_episodes: int,
                       batch_size: int, seed: int, log: Optional[Callable] = None,
                       label: str = "eval", support_only: bool = False) -> np.ndarray:
  """``predict(batch) -> per-task accuracy [B]`` over the seeded stream; ``log`` hears of
  the progress every 10 s."""
  done, start, last = 0, time.time(), time.time()

  def each(_, count):
    nonlocal done, last
    done += count
    if log and time.time() - last > 10:
      log(f"[{label}] {done}/{num_episodes} episodes, "
          f"{done / (time.time() - start):.0f} episodes/s")
      last = time.time()
  return run_episodes(lambda batch, _: dict(accuracy=predict(batch)), sampler, num_episodes,
                      batch_size, seed, support_only, each=each)["accuracy"]


def class_block_accuracy(weights: tf.Tensor, classes: tf.Tensor, shots: tf.Tensor,
                         table: tf.Tensor, counts: tf.Tensor,
                         bias: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-task accuracy [B] on every non-shot example of each episode class.

  Instead of gathering [B, N, Q, d] query copies (the memory traffic that dominated
  evaluation), the (task, class) pairs of the batch are grouped by dataset class: pair
  g of class c gets slot (c, g), and one batched product of each class's examples
  ``table[c]`` [P, d] with the weights of all its pairs [G * N, d] gives every query's
  logits. Shots and padding are masked out, so the counts are those of the simple path.

  weights [B, N, d]; classes [B, N] dataset class ids; shots [B, N, K] positions in
  ``table`` [C, P, d]; counts [C] examples per class; bias [B, N] of the classifier, if any.
  """
  b, n, k = tf.shape(shots)[0], tf.shape(shots)[1], tf.shape(shots)[2]
  c, p, d = tf.shape(table)[0], tf.shape(table)[1], tf.shape(table)[2]
  flat = tf.reshape(classes, [-1])                                        # [B*N]
  onehot = tf.one_hot(flat, c, dtype=tf.int32)
  rank = tf.reduce_sum(tf.cumsum(onehot, axis=0, exclusive=True) * onehot, axis=1)
  groups = tf.reduce_max(rank) + 1
  slot = tf.stack([flat, rank], axis=1)                                   # [B*N, 2]
  task_weights = tf.gather(weights, tf.repeat(tf.range(b), n))           # [B*N, N, d]
  grouped = tf.scatter_nd(slot, task_weights, tf.stack([c, groups, n, d]))
  logits = tf.matmul(table, tf.reshape(grouped, [c, groups * n, d]), transpose_b=True)
  logits = tf.reshape(logits, [c, p, groups, n])
  if bias is not None:
    logits += tf.scatter_nd(slot, tf.repeat(bias, n, axis=0), tf.stack([c, groups, n]))[:, None]
  predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)           # [C, P, G]
  label = tf.scatter_nd(slot, tf.tile(tf.range(n), [b]), tf.stack([c, groups]))
  shot_slots = tf.concat([tf.repeat(slot, k, axis=0), tf.reshape(shots, [-1, 1])], axis=1)
  is_shot = tf.scatter_nd(shot_slots, tf.ones([b * n * k], tf.bool), tf.stack([c, groups, p]))
  real = tf.range(p)[None, :, None] < counts[:, None, None]
  hit = (tf.equal(predicted, label[:, None, :]) & real &
         tf.logical_not(tf.transpose(is_shot, [0, 2, 1])))
  hits = tf.gather_nd(tf.reduce_sum(tf.cast(hit, tf.float32), axis=1), slot)   # [B*N]
  queries = tf.cast(tf.gather(counts, classes) - k, tf.float32)         # [B, N]
  return tf.reduce_sum(tf.reshape(hits, [b, n]), axis=1) / tf.reduce_sum(queries, axis=1)


def simple_predictor(model) -> Callable:
  """predict(episode batch) -> accuracy [B] through model.call (gathered queries)."""
  return tf.function(lambda batch: model(batch, training=False)["accuracy"])


def predictor(model, sampler: EpisodeSampler) -> Callable:
  """The traced evaluation function for ``sampler``'s episodes.

  With every remaining example as a query (``num_queries=None``) the class-block path
  runs, predict(support batch) -> accuracy [B]; it gives the accuracies of the simple path
  (tests pin the two together).
  """
  if not sampler.all_queries:
    return simple_predictor(model)
  table, counts = sampler.class_table, sampler.class_counts

  @tf.function
  def predict(batch):
    adapted = model.adapt(batch["support"], training=False)
    return class_block_accuracy(adapted["weights"], batch["classes"], batch["shots"], table,
                                counts, adapted["bias"])

  return predict


def evaluate(model, sampler: EpisodeSampler, num_episodes: int, batch_size: int,
             seed: int, log: Optional[Callable] = None, label: str = "eval",
             predict: Optional[Callable] = None) -> EvalResult:
  """Evaluation mode (means, no dropout, zero KL) accuracy of ``model``.

  Pass ``predict`` (from :func:`predictor`) to reuse one traced function across calls,
  as periodic validation does; otherwise each call traces anew.
  """
  predict = predict or predictor(model, sampler)
  return EvalResult(episode_accuracies(predict, sampler, num_episodes, batch_size, seed,
                                       log, label, support_only=sampler.all_queries))
