"""Hypothesis fuzzing: the episode sampler, the embeddings loader and the served
signature raise nothing but their documented errors, and what they return is sound."""

import pickle

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import TINY_SIZES
from leo_tf.data import embeddings as E
from leo_tf.data.episodes import EpisodeSampler

FAST = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _dataset(counts, dim=3):
  ids = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  rows = np.arange(ids.size, dtype=np.float32)[:, None] + np.zeros((1, dim), np.float32)
  return E.EmbeddingSet(rows, ids, [f"c{i}" for i in range(len(counts))],
                        np.array([f"{i}-c{c}-f" for i, c in enumerate(ids)]))


@settings(FAST, max_examples=60)
@given(counts=st.lists(st.integers(1, 7), min_size=1, max_size=8),
       n=st.integers(-1, 9), k=st.integers(-1, 6), q=st.one_of(st.none(), st.integers(-1, 5)),
       batch=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_sampler(counts, n, k, q, batch, seed):
  data = _dataset(counts)
  try:
    sampler = EpisodeSampler(data, n, k, q)
  except E.EmbeddingDataError:
    usable = sum(c >= k + 1 for c in counts)  # a class needs its shots and one query
    assert n < 2 or k < 1 or (q is not None and q < 1) or usable < n
    return
  kept = [i for i, c in enumerate(counts) if c >= k + 1]  # the sampler's class ids
  ep = {key: v.numpy() for key, v in sampler.sample(batch, [seed, 1]).items()}
  qq = sampler.num_queries
  assert ep["support"].shape == (batch, n, k, 3) and ep["query"].shape == (batch, n, qq, 3)
  for b in range(batch):
    assert len(set(ep["classes"][b])) == n  # distinct classes
    for c in range(n):
      cls = kept[ep["classes"][b, c]]
      real = ep["query"][b, c][ep["query_mask"][b, c] > 0]
      used = np.concatenate([ep["support"][b, c], real])[:, 0].astype(int)
      assert len(set(used)) == len(used)  # no example twice in an episode
      assert (data.class_ids[used] == cls).all()  # every example of the right class
      assert ep["query_mask"][b, c].sum() == min(qq, counts[cls] - k)


def _random_pickle_data():
  leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                   st.binary(max_size=8))
  return st.recursive(leaf, lambda inner: st.one_of(
      st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)


def _expect_data_error(tmp_path, data: bytes, suffix=".pkl"):
  path = tmp_path / f"fuzz{suffix}"
  path.write_bytes(data)
  try:
    loaded = E.load_embeddings(str(path))
  except E.EmbeddingDataError:
    return None
  assert np.isfinite(loaded.embeddings).all() and loaded.embeddings.ndim == 2
  return loaded


@settings(FAST, max_examples=100)
@given(data=st.binary(max_size=200))
def test_loader_random_bytes(tmp_path_factory, data):
  tmp = tmp_path_factory.mktemp("b")
  _expect_data_error(tmp, data)
  _expect_data_error(tmp, data, ".npz")


@settings(FAST, max_examples=100)
@given(value=_random_pickle_data(), protocol=st.integers(0, 5))
def test_loader_random_pickled_structures(tmp_path_factory, value, protocol):
  _expect_data_error(tmp_path_factory.mktemp("p"), pickle.dumps(value, protocol=protocol))


@settings(FAST, max_examples=100)
@given(n=st.integers(1, 6), d=st.integers(1, 4), cut=st.integers(0, 10**6),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       keys=st.sampled_from(["ok", "bytes", "nodash", "short"]),
       dtype=st.sampled_from([np.float32, np.float64, np.int64, np.float16]))
def test_loader_mutated_valid_pickles(tmp_path_factory, n, d, cut, flips, keys, dtype):
  """Valid files, then damaged: cut short, bytes flipped, odd keys or dtypes."""
  raw = {"embeddings": np.random.default_rng(n).normal(size=(n, d)).astype(dtype),
         "labels": np.arange(n),
         "keys": [f"{i}-c{i % 2}-f" for i in range(n)]}
  if keys == "bytes":
    raw["keys"] = [k.encode() for k in raw["keys"]]
  elif keys == "nodash":
    raw["keys"] = ["x"] * n
  elif keys == "short":
    raw["keys"] = raw["keys"][:-1]
  data = bytearray(pickle.dumps(raw, protocol=2))
  for pos, value in flips:
    data[pos % len(data)] = value
  data = bytes(data[:len(data) - cut % (len(data) + 1) if cut % 3 == 0 else len(data)])
  _expect_data_error(tmp_path_factory.mktemp("m"), data)


# ------------------------------------------------------------------ the served signature


@pytest.fixture(scope="module")
def served():
  graph = pytest.importorskip("leo_tf.serving.graph")
  from leo_tf.leo.config import LEOConfig
  from leo_tf.leo.model import build_leo
  config = LEOConfig(**TINY_SIZES, inner_steps_test=1, finetune_steps_test=1)
  model = build_leo(config, 6)
  specs = [tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int64),
           tf.TensorSpec([None, 6], tf.float32)]
  return tf.function(graph.embedding_endpoint(model, True), input_signature=specs)


_VALUES = st.sampled_from(["normal", "zero", "huge", "tiny", "nan", "inf"])


def _values(kind, shape, rng):
  x = rng.normal(size=shape).astype(np.float32)
  scale = dict(normal=1.0, zero=0.0, huge=1e30, tiny=1e-30, nan=1.0, inf=1.0)[kind]
  x = x * np.float32(scale)
  if kind in ("nan", "inf") and x.size:
    x.flat[rng.integers(x.size)] = np.nan if kind == "nan" else np.inf
  return x


@settings(FAST, max_examples=60)
@given(n=st.integers(0, 5), k=st.integers(0, 3), m=st.integers(0, 4),
       dims=st.sampled_from([(6, 6), (6, 6), (6, 6), (5, 6), (6, 7)]),
       perturb=st.sampled_from(["none", "none", "negative", "gap", "unequal", "extra_label"]),
       kind=_VALUES, seed=st.integers(0, 1000))
def test_served_signature(served, n, k, m, dims, perturb, kind, seed):
  rng = np.random.default_rng(seed)
  labels = np.tile(np.arange(n), k).astype(np.int64)
  rng.shuffle(labels)
  if perturb == "negative" and labels.size:
    labels[0] = -1
  elif perturb == "gap" and labels.size:
    labels[labels == labels.max()] = labels.max() + 1
  elif perturb == "unequal" and labels.size:
    labels = labels[1:]
  rows = labels.size + (1 if perturb == "extra_label" else 0)
  support = _values(kind, (rows, dims[0]), rng)
  query = _values(kind, (m, dims[1]), rng)
  # The graph refuses NaN/Inf embeddings (they would come back as NaN probabilities).
  finite = np.isfinite(support).all() and np.isfinite(query).all()
  valid = dims == (6, 6) and rows == labels.size and _equal_counts(labels) and finite
  try:
    out = served(tf.constant(support), tf.constant(labels), tf.constant(query))
  except tf.errors.InvalidArgumentError as e:
    assert not valid, e.message  # the graph's checks: only bad requests
    return
  except (TypeError, ValueError):
    assert dims != (6, 6)  # a feature size other than 6 does not fit the signature
    return
  assert valid
  probs, predicted = out["probabilities"].numpy(), out["labels"].numpy()
  assert probs.shape == (m, labels.max() + 1) and predicted.shape == (m,)
  assert np.isfinite(probs).all()  # valid requests give proper distributions
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  assert ((predicted >= 0) & (predicted < n)).all()


def _equal_counts(labels):
  """N >= 2 classes 0..N-1, each with the same K >= 1 examples: a servable task."""
  if not labels.size or labels.min() < 0:
    return False
  counts = np.bincount(labels)
  return counts.size >= 2 and counts.min() > 0 and (counts == counts[0]).all()
