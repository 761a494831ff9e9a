"""Episode sampling: shapes, disjointness, determinism, evaluation mode."""

import logging

import numpy as np
import tensorflow as tf
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


def test_impossible_episodes_name_the_binding_and_a_value_that_works():
  # Classes of 5, 6, 7, 8, 9 and 12 examples.
  with pytest.raises(EmbeddingDataError) as error:
    EpisodeSampler(_uneven_set(), 7, 1, 1)
  assert str(error.value) == (
      "<memory>: a 7-way 1-shot episode needs 7 classes of at least 2 examples (1 shots + "
      "1 query) but 6 of its 6 classes have that many; LEOConfig.num_classes = 6 would work")
  with pytest.raises(EmbeddingDataError) as error:
    EpisodeSampler(_uneven_set(), 3, 8, 15)
  # Two classes have 9+ examples; the third largest (8) allows 7 shots.
  assert str(error.value).endswith(
      "needs 3 classes of at least 9 examples (8 shots + 1 query) but 2 of its 6 classes "
      "have that many; LEOConfig.num_classes = 2 or LEOConfig.num_shots = 7 would work")
  with pytest.raises(EmbeddingDataError, match="at least 1 shot"):
    EpisodeSampler(_uneven_set(), 2, 0, 5)


def test_small_classes_give_fewer_queries_the_rest_masked():
  # 2 shots and up to 6 queries: the classes of 5..12 examples give 3, 4, 5, 6, 6, 6.
  sampler = EpisodeSampler(_uneven_set(), 6, 2, 6)
  assert sampler.num_queries == 6
  ep = sampler.sample(4, [3, 4])
  mask, query, support = (ep[k].numpy() for k in ("query_mask", "query", "support"))
  classes = ep["classes"].numpy()
  real_queries = np.array([3, 4, 5, 6, 6, 6])
  np.testing.assert_array_equal(mask.sum(-1), real_queries[classes])
  for b in range(4):
    for n in range(6):
      # The real queries come first, then the padding.
      np.testing.assert_array_equal(mask[b, n], np.arange(6) < real_queries[classes[b, n]])
      used = np.concatenate([support[b, n], query[b, n][mask[b, n] == 1]])
      assert np.all(used[:, 0] == classes[b, n])
      assert len(set(used[:, 1])) == 2 + real_queries[classes[b, n]]  # none twice


def test_queries_are_capped_by_the_largest_class():
  # 15 queries asked, but the largest class (12) has 11 examples beside a shot.
  sampler = EpisodeSampler(_uneven_set(), 3, 1, 15)
  assert sampler.num_queries == 11
  mask = sampler.sample(50, [0, 0])["query_mask"].numpy()
  assert mask.shape == (50, 3, 11) and mask.sum(-1).max() == 11 and mask.sum(-1).min() == 4


def test_a_class_without_a_query_is_left_out_with_one_warning(caplog):
  # 5-shot: the class of 5 examples (c0) cannot give a query.
  with caplog.at_level(logging.WARNING):
    sampler = EpisodeSampler(_uneven_set(), 2, 5, 5)
    EpisodeSampler(_uneven_set(), 3, 5, 5)  # the same classes: no second line
  assert [r.getMessage() for r in caplog.records] == [
      "<memory>: 1 of 6 classes have fewer than 6 examples (5 shots + 1 query) and are left "
      "out of its episodes: c0 (5)"]
  assert sampler.class_names == ["c1", "c2", "c3", "c4", "c5"]
  support = sampler.sample(200, [1, 1])["support"].numpy()
  classes = sampler.sample(200, [1, 1])["classes"].numpy()
  assert 0 not in support[..., 0]                       # no example of c0 at all
  np.testing.assert_array_equal(support[:, :, 0, 0], classes + 1)  # ids follow the names


def test_class_frequencies_are_uniform():
  sampler = EpisodeSampler(_uneven_set(), 2, 1, 1)
  classes = sampler.sample(3000, [0, 0])["classes"].numpy().ravel()
  freq = np.bincount(classes, minlength=6) / classes.size
  np.testing.assert_allclose(freq, 1 / 6, atol=0.02)


def test_accuracy_and_loss_count_only_real_queries():
  from leo_tf.leo.model import build_leo, episode_accuracy
  from helpers import tiny_leo
  # Two tasks, 2-way, 3 query slots; a0/a1: logits predicting class 0/1. Task 0: class 0
  # [a0, a1 | pad a0], class 1 [a1 | pad a0, a0]: 2 of its 3 real queries right (3 of all 6
  # slots). Task 1: every real query wrong, every padded slot right: 0 of 2.
  a0, a1 = [2.0, 0.0], [0.0, 2.0]
  logits = tf.constant([[[a0, a1, a0], [a1, a0, a0]], [[a1, a0, a0], [a0, a1, a1]]])
  mask = tf.constant([[[1.0, 1, 0], [1, 0, 0]], [[1.0, 0, 0], [1, 0, 0]]])
  np.testing.assert_allclose(episode_accuracy(logits, mask), [2 / 3, 0.0])

  # LEO's query loss is the mean cross-entropy over the real queries of each task.
  sampler = EpisodeSampler(_uneven_set(), 3, 2, 6)
  model = build_leo(tiny_leo(num_classes=3), sampler.dim)
  batch = sampler.sample(2, [7, 7])
  out = model(batch, training=False)
  log_p = tf.nn.log_softmax(out["logits"]).numpy()
  m = batch["query_mask"].numpy()
  true = np.stack([log_p[:, n, :, n] for n in range(3)], axis=1)      # [B, N, Q]
  np.testing.assert_allclose(out["query_loss"], -(true * m).sum((1, 2)) / m.sum((1, 2)),
                             rtol=1e-5)
  hits = (log_p.argmax(-1) == np.arange(3)[None, :, None]) * m
  np.testing.assert_allclose(out["accuracy"], hits.sum((1, 2)) / m.sum((1, 2)), rtol=1e-6)
