"""Meta-Dataset-style variable episodes (data/episodes.py VariableEpisodeSampler): their
ranges, masks and determinism, the baselines on masked episodes, and the gin selection
for meta-training, validation and test."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import synthetic_embeddings, tiny_leo, tiny_train
from leo_tf import gin_config
from leo_tf.analysis import baselines
from leo_tf.config_checks import ConfigError
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler, VariableEpisodes, VariableEpisodeSampler
from leo_tf.leo import experiment
from leo_tf.leo.evaluation import EvalConfig
from leo_tf.leo.run import RunConfigs
from leo_tf.leo.trainer import MetaTrainer

SPEC = VariableEpisodes(min_ways=3, max_ways=8, max_support=30, max_shots=6, max_queries=4)


def _data():
  """12 classes of 4 to 15 examples; every embedding row is distinct (its first entry
  is its index), so an episode's examples can be told apart."""
  counts = np.arange(4, 16)
  ids = np.repeat(np.arange(12), counts).astype(np.int32)
  x = np.random.default_rng(0).normal(size=(ids.size, 4)).astype(np.float32)
  x[:, 0] = np.arange(ids.size)
  keys = np.array([f"{i}-c{c}-img{i}.JPEG" for i, c in enumerate(ids)])
  return EmbeddingSet(x, ids, [f"c{c}" for c in range(12)], keys)


def _episodes(seed=0, batch=64, spec=SPEC):
  sampler = VariableEpisodeSampler(_data(), spec)
  return sampler, {k: v.numpy() for k, v in sampler.sample(batch, tf.constant([seed, 1])).items()}


def test_the_stream_is_a_function_of_the_seed():
  sampler, a = _episodes(3)
  b = {k: v.numpy() for k, v in sampler.sample(64, tf.constant([3, 1])).items()}
  _, c = _episodes(4)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["support_mask"], c["support_mask"])


def test_ways_shots_and_queries_stay_in_their_ranges():
  sampler, e = _episodes(batch=400)
  counts = _data().class_counts()
  shots = e["support_mask"].sum(2)                                   # [B, N]
  ways = (shots > 0).sum(1)
  assert (sampler.num_classes, sampler.num_shots, sampler.num_queries) == (8, 6, 4)
  assert ways.min() == 3 and ways.max() == 8                          # the whole range
  real = e["classes"] >= 0
  np.testing.assert_array_equal(real, shots > 0)                      # classes = shots
  np.testing.assert_array_equal(real, np.arange(8)[None] < ways[:, None])
  assert shots[real].min() == 1 and shots.max() <= 6
  assert shots.sum(1).max() <= 30
  assert len(np.unique(shots[real])) > 3                              # unbalanced
  queries = e["query_mask"].sum(2)
  for b in range(len(ways)):
    q = queries[b, real[b]]
    # Meta-Dataset's rule: the same Q for every class, at most half the smallest class.
    assert np.all(q == q[0]) and q[0] == min(4, counts[e["classes"][b, real[b]]].min() // 2)
    assert np.all(queries[b, ~real[b]] == 0)
    assert np.all(shots[b, real[b]] + q[0] <= counts[e["classes"][b, real[b]]])


def test_masks_match_the_examples_and_none_is_used_twice():
  _, e = _episodes(batch=100)
  ids = _data().class_ids
  for name, mask in (("support", e["support_mask"]), ("query", e["query_mask"])):
    # A mask is a prefix of each class's slots; padded slots hold zeros.
    assert np.all(np.diff(mask, axis=2) <= 0)
    assert np.all(e[name][mask == 0] == 0)
  for b in range(100):
    rows = np.concatenate([e["support"][b][e["support_mask"][b] > 0][:, 0],
                           e["query"][b][e["query_mask"][b] > 0][:, 0]]).astype(int)
    assert len(np.unique(rows)) == len(rows)                           # no example twice
    for n in range(8):
      real = e["support"][b, n][e["support_mask"][b, n] > 0][:, 0].astype(int)
      assert np.all(ids[real] == e["classes"][b, n])                   # of its class


def test_the_spec_is_checked():
  with pytest.raises(ConfigError, match=r"VariableEpisodes.uses: unknown \['tset'\]"):
    VariableEpisodes(uses=("tset",))
  with pytest.raises(ConfigError, match="VariableEpisodes.max_support must be >= 20"):
    VariableEpisodes(max_ways=20, max_support=10)
  with pytest.raises(ConfigError, match="LEOConfig.num_classes = 5: MAML learns one"):
    VariableEpisodeSampler(_data(), SPEC, tiny_leo(initialisation="maml", num_classes=5))


def test_nearest_class_mean_on_a_masked_episode():
  """Class 0: shots (0, 0), (2, 0); class 1: one shot (0, 4) and a padded NaN; class 2
  padded. Means (1, 0) and (0, 4): the query (1, 1) is 1 and 10 away."""
  nan = float("nan")
  support = tf.constant([[[[0.0, 0.0], [2.0, 0.0]], [[0.0, 4.0], [nan, nan]],
                          [[nan, nan], [nan, nan]]]])
  mask = tf.constant([[[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
  query = tf.fill([1, 3, 1, 2], 1.0)
  logits = baselines.ncm_logits(support, query, 2.0, mask).numpy()[0, 0, 0]
  np.testing.assert_allclose(logits[:2], [-0.5, -5.0])
  assert logits[2] <= -1e8
  # Logistic regression: padding is never read, and the padded class is never predicted.
  lr = baselines.logistic_regression_logits(support, query, 1.0, 50, mask).numpy()
  zeros = baselines.logistic_regression_logits(tf.where(mask[..., None] > 0, support, 0.0),
                                               query, 1.0, 50, mask).numpy()
  np.testing.assert_array_equal(lr, zeros)
  assert np.all(np.argmax(lr, -1) < 2) and np.all(np.isfinite(lr[..., :2]))


def test_gin_selects_variable_episodes_for_training_validation_and_test(tmp_path):
  bindings = ["VariableEpisodes.uses = ['train', 'test']", "VariableEpisodes.min_ways = 3",
              "VariableEpisodes.max_ways = 5", "VariableEpisodes.max_support = 12",
              "VariableEpisodes.max_shots = 4"]
  with gin_config.scoped(["tasks/variable.gin"], bindings):
    episodes = RunConfigs.from_gin().episodes
  assert episodes.uses == ("train", "test") and episodes.max_ways == 5
  train, val = (synthetic_embeddings(12, 12, dim=16, seed=s, prefix=p)
                for s, p in ((1, "t"), (2, "v")))
  trainer = MetaTrainer(tiny_leo(num_classes=5), tiny_train(2), train, val, str(tmp_path),
                        log=lambda _: None, episodes=episodes)
  assert isinstance(trainer.train_sampler, VariableEpisodeSampler)
  assert type(trainer.val_sampler) is EpisodeSampler                  # 'val' not in uses
  trainer.train()
  lines = []
  result = experiment.test_result(trainer.model, val, tiny_leo(num_classes=5),
                       EvalConfig(num_episodes=30, batch_size=10), lines.append, episodes)
  assert result.accuracies.shape == (30,) and 0.2 < result.mean <= 1.0
  assert "variable episodes: 3-5 ways" in lines[0]
