"""N-way K-shot episodes sampled from an :class:`EmbeddingSet`, as TensorFlow ops.

An episode batch is a dict of tensors with a leading task axis B:
  support     [B, N, K, d]  the K shots of each of the N classes (class n has label n)
  query       [B, N, Q, d]  Q queries per class (padded when classes have fewer)
  query_mask  [B, N, Q]     1.0 for a real query, 0.0 for padding
  classes     [B, N]        the sampler's class ids picked for the episode

Classes of any size take part: a class with fewer than K + Q examples gives its K shots
and every other example as a query, the rest of its Q slots padded (masked); a class
with fewer than K + 1 examples cannot give a query and is left out, with one warning.

Sampling is stateless: episode ``i`` of a stream seeded with ``seed`` is always the same
tensor, whatever ran before it, which is what makes resumed training and evaluation
reproducible.
"""

import logging
import math
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from leo_tf.data.embeddings import EmbeddingDataError, EmbeddingSet

Episode = Dict[str, tf.Tensor]


def fold_seed(seed, index) -> tf.Tensor:
  """A new stateless seed [2] derived from ``seed`` and an integer ``index``."""
  seed = tf.convert_to_tensor(seed)
  if seed.shape.rank == 0:
    seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
  return tf.random.experimental.stateless_fold_in(
      tf.cast(seed, tf.int64), tf.cast(index, tf.int64))


_WARNED = set()  # warning lines already printed: each once per process


def usable_classes(data: EmbeddingSet, num_classes: int, num_shots: int) -> EmbeddingSet:
  """The classes of ``data`` an N-way K-shot episode can use, those with at least K + 1
  examples (K shots, one query); smaller ones are left out with one warning line.

  Too few usable classes is an error naming a binding and a value that would work.
  """
  counts = data.class_counts()
  usable = counts >= num_shots + 1
  if usable.sum() < num_classes:
    raise EmbeddingDataError(_too_few_classes(data.source, counts, num_classes, num_shots))
  if not usable.all():
    small = np.flatnonzero(~usable)
    listed = ", ".join(f"{data.class_names[c]} ({counts[c]})" for c in small[:10])
    more = f" and {small.size - 10} more" if small.size > 10 else ""
    message = (f"{data.source}: {small.size} of {counts.size} classes have fewer than "
               f"{num_shots + 1} examples ({num_shots} shots + 1 query) and are left out "
               f"of its episodes: {listed}{more}")
    if message not in _WARNED:
      _WARNED.add(message)
      logging.warning(message)
  return data.keep_classes(usable)


def _too_few_classes(source: str, counts: np.ndarray, num_classes: int,
                     num_shots: int) -> str:
  enough = int((counts >= num_shots + 1).sum())
  fixes = [f"LEOConfig.num_classes = {enough}"] if enough >= 2 else []
  if counts.size >= num_classes and np.sort(counts)[-num_classes] >= 2:
    fixes.append(f"LEOConfig.num_shots = {np.sort(counts)[-num_classes] - 1}")
  fix = (" or ".join(fixes) + " would work" if fixes
         else "use a split with more classes")
  return (f"{source}: a {num_classes}-way {num_shots}-shot episode needs {num_classes} "
          f"classes of at least {num_shots + 1} examples ({num_shots} shots + 1 query) "
          f"but {enough} of its {counts.size} classes have that many; {fix}")


class EpisodeSampler:
  """Samples meta-batches of N-way K-shot episodes from one split.

  ``num_queries=None`` means evaluation mode: every example of a class that is not a
  shot is a query (padded to the largest class, with ``query_mask`` marking real ones).
  Otherwise a class gives up to ``num_queries`` queries, fewer when it has fewer
  examples; Q is ``num_queries``, or less when no class can fill it.
  """

  def __init__(self, data: EmbeddingSet, num_classes: int, num_shots: int,
               num_queries: Optional[int]):
    if num_classes < 2:
      raise EmbeddingDataError(f"an episode needs at least 2 classes, got N={num_classes}")
    if num_shots < 1:
      raise EmbeddingDataError(f"an episode needs at least 1 shot per class, got K={num_shots}")
    if num_queries is not None and num_queries < 1:
      raise EmbeddingDataError(f"num_queries must be >= 1 or None, got {num_queries}")
    data = usable_classes(data, num_classes, num_shots)
    self.num_classes = num_classes
    self.num_shots = num_shots
    self.dim = data.dim
    self.source = data.source
    self.class_names = data.class_names  # of the ids in ``classes``
    order = np.argsort(data.class_ids, kind="stable")
    counts = data.class_counts()
    self._embeddings = tf.constant(data.embeddings[order])
    self._class_table = None
    self._offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int32)
    self._counts = tf.constant(counts, tf.int32)
    self._num_dataset_classes = int(counts.size)
    self._max_count = int(counts.max())
    self.all_queries = num_queries is None
    self.num_queries = min(num_queries or self._max_count, self._max_count - num_shots)

  @classmethod
  def for_model(cls, data: EmbeddingSet, config, num_queries: Optional[int]):
    """Episodes of a model's task: ``config`` (a LEOConfig) gives N and K."""
    return cls(data, config.num_classes, config.num_shots, num_queries)

  @property
  def class_counts(self) -> tf.Tensor:
    """Examples per dataset class [C] (class ids as in ``classes``)."""
    return self._counts

  @property
  def class_table(self) -> tf.Tensor:
    """Every class's examples [C, max count, d], zero-padded, in sampling order."""
    if self._class_table is None:
      counts = self._counts.numpy()
      table = np.zeros((counts.size, self._max_count, self.dim), np.float32)
      # The rows are sorted by class, so they fill each class's first slots in order.
      table[np.arange(self._max_count) < counts[:, None]] = self._embeddings.numpy()
      self._class_table = tf.constant(table)
    return self._class_table

  def _episode_keys(self, batch_size: int, seed):
    """Classes [B, N] of each task and random sort keys of their examples [B, N, max]."""
    n = self.num_classes
    class_seed, example_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    # N distinct classes per task: the top-N of random keys is a uniform random subset.
    class_keys = tf.random.stateless_uniform(
        [batch_size, self._num_dataset_classes], class_seed)
    classes = tf.math.top_k(class_keys, n).indices                       # [B, N]
    counts = tf.gather(self._counts, classes)                             # [B, N]
    # Random order of each class's examples; padding positions get key -1 so they sort last.
    keys = tf.random.stateless_uniform([batch_size, n, self._max_count], example_seed)
    valid = tf.range(self._max_count)[None, None, :] < counts[..., None]
    return classes, tf.where(valid, keys, -1.0)

  def sample(self, batch_size: int, seed) -> Episode:
    """One meta-batch of ``batch_size`` episodes, a pure function of ``seed``."""
    k, q = self.num_shots, self.num_queries
    classes, keys = self._episode_keys(batch_size, seed)
    top = tf.math.top_k(keys, k + q)
    positions, in_class = top.indices, top.values >= 0.0                  # [B, N, K+Q]
    positions = tf.where(in_class, positions, 0)
    index = tf.gather(self._offsets, classes)[..., None] + positions
    examples = tf.gather(self._embeddings, index)                          # [B, N, K+Q, d]
    return dict(support=examples[:, :, :k], query=examples[:, :, k:],
                query_mask=tf.cast(in_class[:, :, k:], tf.float32), classes=classes)

  def sample_support(self, batch_size: int, seed) -> Episode:
    """The episodes of ``sample(batch_size, seed)`` without their query tensors.

    Returns support [B, N, K, d], classes [B, N] and shots [B, N, K] (the shots'
    positions in ``class_table``); the queries are every other example of the class.
    The top-K of the keys are the first K of their top-(K+Q): the same shots.
    """
    classes, keys = self._episode_keys(batch_size, seed)
    shots = tf.math.top_k(keys, self.num_shots).indices                   # [B, N, K]
    index = tf.gather(self._offsets, classes)[..., None] + shots
    return dict(support=tf.gather(self._embeddings, index), classes=classes, shots=shots)

  def dataset(self, batch_size: int, seed: int, start: int = 0,
              count: Optional[int] = None) -> tf.data.Dataset:
    """Meta-batch ``i`` (for i = start, start+1, ...) is ``sample(B, fold_seed(seed, i))``."""
    return self._stream(self.sample, batch_size, seed, start, count)

  def support_dataset(self, batch_size: int, seed: int, start: int = 0,
                      count: Optional[int] = None) -> tf.data.Dataset:
    """``dataset`` of ``sample_support`` batches: the same episodes, no query copies."""
    return self._stream(self.sample_support, batch_size, seed, start, count)

  def batches(self, num_episodes: int, batch_size: int, seed: int,
              support_only: bool = False) -> Iterator[Tuple[int, Episode, int]]:
    """The first ``num_episodes`` episodes of the seeded stream as (index, batch, count):
    batch ``index`` of ``batch_size`` episodes, of which the first ``count`` belong to
    the stream (the last batch is trimmed). ``support_only``: ``support_dataset``'s."""
    stream = self.support_dataset if support_only else self.dataset
    batches = math.ceil(num_episodes / batch_size)
    for i, batch in enumerate(stream(batch_size, seed, count=batches)):
      yield i, batch, min(batch_size, num_episodes - i * batch_size)

  @staticmethod
  def _stream(sample_fn, batch_size, seed, start, count):
    indices = tf.data.Dataset.counter(start, dtype=tf.int64)
    if count is not None:
      indices = indices.take(count)
    return indices.map(lambda i: sample_fn(batch_size, fold_seed(seed, i)),
                       num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)
