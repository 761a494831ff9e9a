"""Embedding files: released layout, restricted unpickling, one clear error per bad input."""

import os
import pickle

import numpy as np
import pytest

from leo_tf.data import embeddings as E


def _write(path, raw, protocol=2):
  with open(path, "wb") as f:
    pickle.dump(raw, f, protocol=protocol)
  return str(path)


def _raw(n=6, d=4):
  rng = np.random.default_rng(0)
  return {"embeddings": rng.normal(size=(n, d)).astype(np.float32),
          "labels": np.arange(n) % 2,
          "keys": np.array([f"{i}-n0{i % 2}-n0{i % 2}_{i}.JPEG" for i in range(n)])}


def test_round_trip_pickle_and_npz(tmp_path):
  raw = _raw()
  for suffix in (".pkl", ".npz"):
    path = E.embeddings_path(str(tmp_path), "mini", "center", "train", suffix)
    E.save_embeddings(path, raw["embeddings"], raw["labels"], raw["keys"])
    data = E.load_embeddings(path)
    np.testing.assert_array_equal(data.embeddings, raw["embeddings"])
    assert data.class_names == ["n00", "n01"]
    np.testing.assert_array_equal(data.class_ids, [0, 1, 0, 1, 0, 1])
    assert list(data.keys) == list(raw["keys"])
    assert not os.path.exists(path + ".tmp")


def test_python2_style_pickle_with_byte_keys(tmp_path):
  """Python 2 pickles store str as bytes; latin1 decoding gives the classes back."""
  raw = _raw()
  raw["keys"] = [k.encode("latin1") for k in raw["keys"]]  # a list of byte strings
  data = E.load_embeddings(_write(tmp_path / "a.pkl", raw, protocol=2))
  assert data.class_names == ["n00", "n01"]


def test_find_file_prefers_pkl_then_npz(tmp_path):
  raw = _raw()
  path = E.embeddings_path(str(tmp_path), "mini", "center", "val", ".npz")
  E.save_embeddings(path, raw["embeddings"], raw["labels"], raw["keys"])
  assert E.find_embeddings_file(str(tmp_path), "mini", "center", "val") == path
  with pytest.raises(E.EmbeddingDataError, match="No embeddings file for split 'test'"):
    E.find_embeddings_file(str(tmp_path), "mini", "center", "test")


def test_l2_normalised_split(tmp_path):
  raw = _raw()
  E.save_embeddings(E.embeddings_path(str(tmp_path), "m", "c", "train"), raw["embeddings"],
                    raw["labels"], raw["keys"])
  data = E.load_split(str(tmp_path), "m", "c", "train")
  np.testing.assert_allclose(np.linalg.norm(data.embeddings, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("labels"), "missing key"),
    (lambda r: r.update(keys=r["keys"][:-1]), "lengths differ"),
    (lambda r: r["embeddings"].__setitem__((2, 1), np.nan), "NaN or Inf"),
    (lambda r: r["embeddings"].__setitem__((3, 0), np.inf), "NaN or Inf"),
    (lambda r: r.update(embeddings=r["embeddings"].astype(np.int32)), "floating point"),
    (lambda r: r.update(embeddings=r["embeddings"][:, :, None]), "rank 2"),
    (lambda r: r.update(keys=np.array(["nodashes"] * 6)), "not of the form"),
])
def test_bad_contents_give_one_clear_error(tmp_path, mutate, message):
  raw = _raw()
  mutate(raw)
  with pytest.raises(E.EmbeddingDataError, match=message):
    E.load_embeddings(_write(tmp_path / "bad.pkl", raw))


def test_missing_file(tmp_path):
  with pytest.raises(E.EmbeddingDataError, match="not found"):
    E.load_embeddings(str(tmp_path / "nope.pkl"))


def test_not_a_dict(tmp_path):
  with pytest.raises(E.EmbeddingDataError, match="expected a dict"):
    E.load_embeddings(_write(tmp_path / "list.pkl", [1, 2, 3]))


def test_keep_classes_renumbers_the_kept_ones():
  raw = _raw(n=9)
  raw["keys"] = np.array([f"{i}-n0{i % 3}-f{i}" for i in range(9)])
  data = E.validate_embedding_dict(raw, "mem")
  assert data.keep_classes([True, True, True]) is data
  kept = data.keep_classes([True, False, True])             # n01 (rows 1, 4, 7) left out
  assert kept.class_names == ["n00", "n02"]
  np.testing.assert_array_equal(kept.class_ids, [0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(kept.embeddings, raw["embeddings"][[0, 2, 3, 5, 6, 8]])
  assert list(kept.keys) == ["0-n00-f0", "2-n02-f2", "3-n00-f3", "5-n02-f5", "6-n00-f6",
                             "8-n02-f8"]


class _RunsCode:
  """A pickle payload that would create a file if it were ever executed."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused_without_running(tmp_path):
  marker = tmp_path / "pwned"
  path = _write(tmp_path / "evil.pkl", {"embeddings": _RunsCode(str(marker)),
                                        "labels": [], "keys": []})
  with pytest.raises(E.EmbeddingDataError, match=r"refusing to load '\w+\.open'"):
    E.load_embeddings(path)
  assert not marker.exists()


def test_os_system_payload_refused(tmp_path):
  payload = b"cos\nsystem\n(S'touch " + str(tmp_path / "x").encode() + b"'\ntR."
  path = tmp_path / "sys.pkl"
  path.write_bytes(payload)
  with pytest.raises(E.EmbeddingDataError, match="refusing"):
    E.load_embeddings(str(path))
  assert not (tmp_path / "x").exists()


def test_truncated_pickle(tmp_path):
  data = pickle.dumps(_raw(), protocol=2)
  path = tmp_path / "cut.pkl"
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(E.EmbeddingDataError, match="truncated"):
    E.load_embeddings(str(path))


def test_corrupt_npz(tmp_path):
  path = tmp_path / "x.npz"
  path.write_bytes(b"not a zip file")
  with pytest.raises(E.EmbeddingDataError, match="not a readable .npz"):
    E.load_embeddings(str(path))


def test_concatenate_keeps_classes_apart():
  a = E.validate_embedding_dict(_raw(), "a")
  raw_b = _raw()
  raw_b["keys"] = np.array([k.replace("n0", "m0") for k in raw_b["keys"]])
  b = E.validate_embedding_dict(raw_b, "b")
  joined = E.EmbeddingSet.concatenate([a, b])
  assert joined.num_classes == 4
  np.testing.assert_array_equal(np.bincount(joined.class_ids), [3, 3, 3, 3])
  with pytest.raises(E.EmbeddingDataError, match="share class names"):
    E.EmbeddingSet.concatenate([a, a])
