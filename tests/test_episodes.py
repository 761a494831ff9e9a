"""Episode sampling: shapes, disjointness, determinism, evaluation mode."""

import numpy as np
import pytest

from leo_tf.data.embeddings import EmbeddingDataError, EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler


def _uneven_set():
  counts = [5, 6, 7, 8, 9, 12]
  ids = np.repeat(np.arange(6), counts).astype(np.int32)
  # Each row encodes (class, index within class) so tests can decode what was sampled.
  within = np.concatenate([np.arange(c) for c in counts])
  x = np.stack([ids, within, np.ones_like(ids)], axis=1).astype(np.float32)
  return EmbeddingSet(x, ids, [f"c{i}" for i in range(6)], np.array(["k"] * ids.size))


def test_shapes_labels_and_disjoint_support_query():
  sampler = EpisodeSampler(_uneven_set(), num_classes=4, num_shots=2, num_queries=3)
  ep = sampler.sample(8, seed=[1, 2])
  assert ep["support"].shape == (8, 4, 2, 3) and ep["query"].shape == (8, 4, 3, 3)
  support, query, classes = ep["support"].numpy(), ep["query"].numpy(), ep["classes"].numpy()
  for b in range(8):
    assert len(set(classes[b])) == 4                       # N distinct classes
    for n in range(4):
      # Class n of the episode is dataset class classes[b, n], in support and query.
      assert np.all(support[b, n, :, 0] == classes[b, n])
      assert np.all(query[b, n, :, 0] == classes[b, n])
      examples = list(support[b, n, :, 1]) + list(query[b, n, :, 1])
      assert len(set(examples)) == 5                       # no example used twice
  assert np.all(ep["query_mask"].numpy() == 1.0)


def test_same_seed_same_episodes_other_seed_other_episodes():
  sampler = EpisodeSampler(_uneven_set(), 3, 1, 2)
  a, b, c = (sampler.sample(4, s)["support"].numpy() for s in ([5, 5], [5, 5], [5, 6]))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  first = [e["support"].numpy() for e in sampler.dataset(4, seed=3, count=3)]
  resumed = [e["support"].numpy() for e in sampler.dataset(4, seed=3, start=1, count=2)]
  np.testing.assert_array_equal(first[1:], resumed)         # stream position = episode


def test_evaluation_mode_uses_every_remaining_example():
  sampler = EpisodeSampler(_uneven_set(), 6, 1, None)
  assert sampler.num_queries == 11                          # largest class 12 - K
  ep = sampler.sample(3, [0, 1])
  mask, query, classes = ep["query_mask"].numpy(), ep["query"].numpy(), ep["classes"].numpy()
  counts = np.array([5, 6, 7, 8, 9, 12])
  np.testing.assert_array_equal(mask.sum(-1), counts[classes] - 1)
  for b in range(3):
    for n in range(6):
      real = query[b, n, mask[b, n] == 1]
      assert len(set(real[:, 1])) == counts[classes[b, n]] - 1
      assert np.all(real[:, 0] == classes[b, n])


def test_not_enough_examples_or_classes():
  with pytest.raises(EmbeddingDataError, match="needs 7 classes"):
    EpisodeSampler(_uneven_set(), 7, 1, 1)
  with pytest.raises(EmbeddingDataError, match=r"needs 10 examples per class .* c0 \(5\)"):
    EpisodeSampler(_uneven_set(), 2, 5, 5)
  with pytest.raises(EmbeddingDataError, match="at least 1 shot"):
    EpisodeSampler(_uneven_set(), 2, 0, 5)


def test_class_frequencies_are_uniform():
  sampler = EpisodeSampler(_uneven_set(), 2, 1, 1)
  classes = sampler.sample(3000, [0, 0])["classes"].numpy().ravel()
  freq = np.bincount(classes, minlength=6) / classes.size
  np.testing.assert_allclose(freq, 1 / 6, atol=0.02)
