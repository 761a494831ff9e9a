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

:class:`VariableEpisodeSampler` draws Meta-Dataset's task shapes instead (variable ways,
unbalanced shots), padded, with ``support_mask`` [B, N, K] marking the real shots.
"""

import dataclasses
import logging
import math
from typing import Dict, Iterator, Optional, Tuple

import gin
import numpy as np
import tensorflow as tf

from leo_tf.config_checks import ConfigError, check_types, require_at_least
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
  def for_model(cls, data: EmbeddingSet, config, num_queries: Optional[int],
                variable: Optional["VariableEpisodes"] = None, use: str = "test"):
    """Episodes of a model's task: ``config`` (a LEOConfig) gives N and K; or the
    variable episodes of ``variable`` when its ``uses`` name ``use``."""
    if variable is not None and use in variable.uses:
      return VariableEpisodeSampler(data, variable, config)
    return cls(data, config.num_classes, config.num_shots, num_queries)

  @property
  def shape(self) -> str:
    """The episodes' shape in words (logs, table titles)."""
    queries = "all remaining" if self.all_queries else self.num_queries
    return f"{self.num_classes}-way {self.num_shots}-shot, {queries} queries per class"

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


USES = ("train", "val", "test")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class VariableEpisodes:
  """Episodes shaped as Meta-Dataset's (Triantafillou et al.): N uniform in [min_ways,
  max_ways] (at most the split's classes); Q = min(max_queries, half the smallest chosen
  class) queries per class; a support budget of min(max_support, sum_n ceil(beta *
  min(max_shots, count_n - Q))), beta ~ U(0, 1]; class n gets 1 + floor(p_n * (budget -
  N)) shots (at most max_shots and count_n - Q), p_n proportional to count_n * exp(a_n),
  a_n ~ U[log 1/2, log 2]. Padded to N = max_ways, K = max_shots, Q = max_queries.

  ``uses``: where they replace LEOConfig's N-way K-shot episodes: "train" (meta-training),
  "val" (validation), "test" (the test evaluation of leo-train and leo-eval, comparisons).
  """
  uses: Tuple[str, ...] = ()
  min_ways: int = 5
  max_ways: int = 20
  max_support: int = 100
  max_shots: int = 20
  max_queries: int = 10

  def __post_init__(self):
    check_types(self)
    object.__setattr__(self, "uses", tuple(self.uses))
    unknown = sorted(set(self.uses) - set(USES))
    if unknown:
      raise ConfigError(f"VariableEpisodes.uses: unknown {unknown}; choose from {list(USES)}")
    require_at_least(self, 2, "min_ways")
    require_at_least(self, 1, "max_shots", "max_queries")
    require_at_least(self, self.min_ways, "max_ways")
    require_at_least(self, self.max_ways, "max_support")


class VariableEpisodeSampler(EpisodeSampler):
  """Samples meta-batches of :class:`VariableEpisodes`, padded, as TensorFlow ops.

  An episode batch holds support [B, N, K, d] with ``support_mask`` [B, N, K] (padded
  shots are zeros), query [B, N, Q, d] with ``query_mask`` and classes [B, N] (-1 for a
  padded class); N, K, Q are the maxima. Stateless like EpisodeSampler.
  """

  def __init__(self, data: EmbeddingSet, spec: VariableEpisodes, config=None):
    """``config``: the LEOConfig of the model, checked (MAML's learned weights have one
    row per class, so its num_classes must be the episodes' N)."""
    super().__init__(data, spec.min_ways, 1, None)  # classes with a shot and a query
    self.spec = spec
    self.num_classes = min(spec.max_ways, self._num_dataset_classes)
    self.num_shots = min(spec.max_shots, self._max_count - 1)
    self.num_queries = min(spec.max_queries, self._max_count // 2)
    self.all_queries = False
    if (config is not None and config.initialisation == "maml" and
        config.num_classes != self.num_classes):
      raise ConfigError(f"LEOConfig.num_classes = {config.num_classes}: MAML learns one "
                        f"weight row per class, so it must be VariableEpisodes.max_ways "
                        f"({self.num_classes} here)")

  @property
  def shape(self) -> str:
    return (f"variable episodes: {self.spec.min_ways}-{self.num_classes} ways, up to "
            f"{self.num_shots} shots a class and {self.spec.max_support} in all, up to "
            f"{self.num_queries} queries per class")

  def _shape(self, batch_size: int, seed):
    """Ways [B], classes [B, N] (-1 padded), shots [B, N] and queries [B] per episode."""
    n, spec = self.num_classes, self.spec
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4))
    ways = tf.random.stateless_uniform([batch_size], seeds[0], spec.min_ways, n + 1, tf.int32)
    keys = tf.random.stateless_uniform([batch_size, self._num_dataset_classes], seeds[1])
    classes = tf.math.top_k(keys, n).indices                            # [B, N]
    present = tf.range(n)[None, :] < ways[:, None]
    counts = tf.where(present, tf.gather(self._counts, classes), 0)
    queries = tf.minimum(self.num_queries, tf.reduce_min(
        tf.where(present, counts // 2, self._max_count), axis=1))        # [B]
    remaining = tf.maximum(counts - queries[:, None], 0)
    # beta in (0, 1]: 1 - U[0, 1).
    beta = 1.0 - tf.random.stateless_uniform([batch_size, 1], seeds[2])
    contribution = tf.cast(tf.minimum(remaining, self.num_shots), tf.float32)
    budget = tf.minimum(tf.reduce_sum(tf.where(present, tf.math.ceil(beta * contribution),
                                               0.0), axis=1), float(spec.max_support))
    weights = tf.cast(counts, tf.float32) * tf.exp(tf.random.stateless_uniform(
        [batch_size, n], seeds[3], math.log(0.5), math.log(2.0)))
    share = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    wanted = tf.floor(share * (budget - tf.cast(ways, tf.float32))[:, None]) + 1.0
    shots = tf.where(present, tf.minimum(tf.cast(wanted, tf.int32),
                                         tf.minimum(remaining, self.num_shots)), 0)
    return ways, tf.where(present, classes, -1), shots, queries

  def sample(self, batch_size: int, seed) -> Episode:
    """One meta-batch of ``batch_size`` padded episodes, a pure function of ``seed``."""
    k, q = self.num_shots, self.num_queries
    shape_seed, example_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    ways, classes, shots, queries = self._shape(batch_size, shape_seed)
    counts = tf.gather(self._counts, tf.maximum(classes, 0))             # [B, N]
    keys = tf.random.stateless_uniform([batch_size, self.num_classes, self._max_count],
                                       example_seed)
    keys = tf.where(tf.range(self._max_count)[None, None] < counts[..., None], keys, -1.0)
    # A random order of each class's examples: its first shots_n are the shots, the next
    # queries are the queries, so no example is used twice.
    order = tf.math.top_k(keys, min(k + q, self._max_count)).indices     # [B, N, P]
    support_mask = tf.range(k)[None, None] < shots[..., None]            # [B, N, K]
    at = tf.minimum(shots[..., None] + tf.range(q)[None, None], order.shape[-1] - 1)
    query_mask = ((tf.range(q)[None, None] < queries[:, None, None]) &
                  (classes[..., None] >= 0))                              # [B, N, Q]
    offsets = tf.gather(self._offsets, tf.maximum(classes, 0))[..., None]

    def examples(positions, mask):
      x = tf.gather(self._embeddings, offsets + positions)
      return tf.where(mask[..., None], x, 0.0), tf.cast(mask, tf.float32)
    support, support_mask = examples(order[:, :, :k], support_mask)
    query, query_mask = examples(tf.gather(order, at, batch_dims=2), query_mask)
    return dict(support=support, support_mask=support_mask, query=query,
                query_mask=query_mask, classes=classes)
