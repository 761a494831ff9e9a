"""Hostile and odd embedding files (issue 16, item 4): a corpus built here, one test per
case, each pinning the one line the loader now gives."""

import codecs
import io
import os
import pickle
import resource
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from leo_tf.data import embeddings as E
from leo_tf.data import safe_pickle
from leo_tf.data.source import EmbeddingSource
from leo_tf.serving import graph


def _raw(n=6, d=4, dtype=np.float32):
  rng = np.random.default_rng(0)
  return {"embeddings": rng.normal(size=(n, d)).astype(dtype),
          "labels": np.arange(n) % 2,
          "keys": np.array([f"{i}-n0{i % 2}-f{i}.JPEG" for i in range(n)])}


def _write(path, raw, protocol=2):
  path.write_bytes(pickle.dumps(raw, protocol=protocol))
  return str(path)


class _Reduce:
  """Pickles as ``fn(*args)`` (with an optional BUILD ``state``): hand-made opcodes."""

  def __init__(self, fn, args, state=None):
    self.fn, self.args, self.state = fn, args, state

  def __reduce__(self):
    return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _reconstruct():
  from numpy._core.multiarray import _reconstruct  # pylint: disable=import-outside-toplevel
  return _reconstruct


# ------------------------------------------------------------------ size claims


def test_small_pickle_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
  """33 KB that asked numpy for a 16384 x 16384 float64 array (2 GiB): refused, and the
  process's peak memory does not move by anything near that."""
  raw = _raw()
  raw["embeddings"] = _Reduce(_reconstruct(), (np.ndarray, (16384, 16384), b"d"))
  raw["keys"] = np.array([f"{i}-n0{i % 2}-" + "x" * 5000 for i in range(6)])
  path = _write(tmp_path / "bomb.pkl", raw)
  assert 30_000 < os.path.getsize(path) < 200_000
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with pytest.raises(E.EmbeddingDataError,
                     match=r"bomb.pkl: refused pickle: an array of shape \(16384, 16384\) "
                           r"claims 2,147,483,648 bytes, more than a [\d,]+-byte file can hold"):
    E.load_embeddings(path)
  assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_array_state_claiming_more_items_than_it_holds_is_refused(tmp_path):
  """An object array whose state claims 40000 x 40000 items but lists two: numpy itself
  would crash the process (segfault) on it."""
  state = (1, (40000, 40000), np.dtype(object), False, [1, 2])
  raw = _raw()
  raw["keys"] = _Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), state)
  with pytest.raises(E.EmbeddingDataError, match=r"refused pickle: an array of shape "
                                                 r"\(40000, 40000\) and dtype object claims"):
    E.load_embeddings(_write(tmp_path / "state.pkl", raw))
  state = (1, (3,), np.dtype(object), False, ["a", "b"])
  raw["keys"] = _Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), state)
  with pytest.raises(E.EmbeddingDataError, match=r"an object array of shape \(3,\) holds 2"):
    E.load_embeddings(_write(tmp_path / "short.pkl", raw))


def test_one_string_copied_through_the_memo_is_refused(tmp_path):
  """One 100 KB string encoded to bytes 10,000 times by memo reference: 1 GB from a
  ~140 KB file."""
  text = "x" * 100_000
  raw = _raw()
  raw["keys"] = [_Reduce(codecs.encode, (text, "latin1")) for _ in range(10_000)]
  with pytest.raises(E.EmbeddingDataError, match=r"a byte string claims 100,000 bytes, "
                                                 r"more than a [\d,]+-byte file can hold"):
    E.load_embeddings(_write(tmp_path / "memo.pkl", raw))


def test_npz_whose_header_claims_more_than_it_holds_is_refused(tmp_path):
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      buf, {"descr": "<f8", "fortran_order": False, "shape": (16384, 16384)})
  path = tmp_path / "claim.npz"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("embeddings.npy", buf.getvalue() + b"\0" * 64)
  with pytest.raises(E.EmbeddingDataError,
                     match=r"claim.npz: array embeddings.npy claims shape \(16384, 16384\) "
                           r"of float64 \(2,147,483,648 bytes\) but holds \d+ bytes"):
    E.load_embeddings(str(path))


def test_npz_zip_bomb_is_refused(tmp_path):
  path = tmp_path / "bomb.npz"
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("embeddings.npy", b"\0" * (200 << 20))
  assert os.path.getsize(path) < 1 << 20
  with pytest.raises(E.EmbeddingDataError, match="would expand to 209,715,200 bytes from a "
                                                 r"[\d,]+-byte file; refusing it as a zip bomb"):
    E.load_embeddings(str(path))


def test_compressed_npz_of_real_embeddings_loads(tmp_path):
  raw = _raw(n=200, d=64)
  path = tmp_path / "ok.npz"
  np.savez_compressed(path, **raw)
  np.testing.assert_array_equal(E.load_embeddings(str(path)).embeddings, raw["embeddings"])


# ------------------------------------------------------------------ protocols 0-5


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_loads_including_empty_and_object_arrays(tmp_path, protocol):
  """Files numpy and pickle write today: protocol 5 (Python 3.8+'s default for numpy
  arrays goes through numpy._core.numeric._frombuffer), an empty array at protocol 2
  (its data is __builtin__.bytes()), object and str key arrays, float64 embeddings."""
  raw = _raw(dtype=np.float64)
  raw["keys"] = raw["keys"].astype(object)
  raw["extra"] = {"empty": np.zeros((0, 4), np.float32), "scalar": np.float32(2.5)}
  path = _write(tmp_path / "p.pkl", raw, protocol)
  data = E.load_embeddings(path)
  np.testing.assert_array_equal(data.embeddings, raw["embeddings"].astype(np.float32))
  assert data.class_names == ["n00", "n01"]
  loaded = safe_pickle.loads(pickle.dumps(raw, protocol=protocol))
  assert loaded["extra"]["empty"].shape == (0, 4)
  assert type(loaded["extra"]["empty"]) is np.ndarray and loaded["extra"]["scalar"] == 2.5
  raw["embeddings"] = np.zeros((0, 4), np.float32)
  raw["labels"], raw["keys"] = np.zeros(0, np.int64), np.array([], dtype=str)
  with pytest.raises(E.EmbeddingDataError, match="the file holds no examples"):
    E.load_embeddings(_write(tmp_path / "empty.pkl", raw, protocol))


def test_python2_array_data_read_as_latin1_text_loads(tmp_path):
  """Python 2's numpy wrote an array's data as a str: the released LEO files. Read with
  latin1 it arrives as text of one character per byte."""
  x = np.arange(24, dtype=np.float32).reshape(6, 4) + 0.5
  state = (1, (6, 4), np.dtype(np.float32), False, x.tobytes().decode("latin1"))
  raw = _raw()
  raw["embeddings"] = _Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), state)
  np.testing.assert_array_equal(E.load_embeddings(_write(tmp_path / "py2.pkl", raw)).embeddings, x)
  state = state[:-1] + (state[-1][:-1],)
  raw["embeddings"] = _Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), state)
  with pytest.raises(E.EmbeddingDataError, match=r"the data of an array of shape \(6, 4\) "
                                                 "and dtype float32 has the wrong size"):
    E.load_embeddings(_write(tmp_path / "short.pkl", raw))


def test_bytes_with_a_size_argument_is_refused(tmp_path):
  raw = _raw()
  raw["keys"] = _Reduce(bytes, (10**10,))
  with pytest.raises(E.EmbeddingDataError, match=r"refusing bytes\(\) with arguments"):
    E.load_embeddings(_write(tmp_path / "bytes.pkl", raw))


# ------------------------------------------------------------------ finiteness


def test_float64_beyond_float32_range_is_refused_like_nan(tmp_path):
  raw = _raw(dtype=np.float64)
  raw["embeddings"][4, 2] = 1e300
  with pytest.raises(E.EmbeddingDataError,
                     match=r"1 embedding row\(s\) hold NaN or Inf or values beyond float32's "
                           r"range \(first at row 4, key '4-n00-f4.JPEG'\)"):
    E.load_embeddings(_write(tmp_path / "big.pkl", raw))


def test_huge_float32_rows_normalise_to_unit_length(tmp_path):
  """Rows of 1e20 used to have norm Inf and become zeros (chance accuracy, no error)."""
  raw = _raw()
  raw["embeddings"][1] = 1e20
  raw["embeddings"][2] = np.float32(3e38)
  E.save_embeddings(E.embeddings_path(str(tmp_path), "d", "c", "train"), raw["embeddings"],
                    raw["labels"], raw["keys"])
  data = E.load_split(str(tmp_path), "d", "c", "train")
  np.testing.assert_allclose(np.linalg.norm(data.embeddings, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(data.embeddings[1], 0.5, rtol=1e-6)  # 4 equal values
  small = E.l2_normalize_rows(np.array([[3e-13, 4e-13], [0, 0]], np.float32))
  np.testing.assert_allclose(small, [[0.3, 0.4], [0, 0]], rtol=1e-5)  # the 1e-12 floor


def test_served_normalisation_of_huge_rows():
  x = tf.constant([[1e20, 1e20, 1e20, 1e20], [3.0, 4.0, 0.0, 0.0], [0, 0, 0, 0]], tf.float32)
  np.testing.assert_allclose(graph.l2_normalize(x).numpy(),
                             [[0.5] * 4, [0.6, 0.8, 0, 0], [0] * 4], rtol=1e-6)


# ------------------------------------------------------------------ the filesystem


def _split_path(tmp_path, suffix=".pkl"):
  path = E.embeddings_path(str(tmp_path), "d", "c", "train", suffix)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("make, kind", [
    (os.mkdir, "a directory"),
    (os.mkfifo, "a FIFO"),
    (lambda p: os.symlink("/dev/zero", p), "a device"),
])
def test_what_is_not_a_regular_file_is_one_line(tmp_path, suffix, make, kind):
  path = _split_path(tmp_path, suffix)
  make(path)
  with pytest.raises(E.EmbeddingDataError, match=f"train_embeddings{suffix}: is {kind}, "
                                                 "not a regular embeddings file"):
    E.load_split(str(tmp_path), "d", "c", "train")


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_unreadable_file_is_one_line(tmp_path, suffix, monkeypatch):
  path = _split_path(tmp_path, suffix)
  raw = _raw()
  E.save_embeddings(path, raw["embeddings"], raw["labels"], raw["keys"])
  os.chmod(path, 0)
  if os.geteuid() == 0:  # root reads anything: have open() answer as for a user
    real_open = open

    def denied(p, *a, **k):
      if str(p) == path:
        raise PermissionError(13, "Permission denied", p)
      return real_open(p, *a, **k)
    monkeypatch.setattr("builtins.open", denied)
  with pytest.raises(E.EmbeddingDataError, match=f"train_embeddings{suffix}: cannot read "
                                                 "it: Permission denied"):
    E.load_split(str(tmp_path), "d", "c", "train")


# ------------------------------------------------------------------ splits


def test_splits_of_different_embedding_sizes_fail_when_loaded(tmp_path):
  for split, d in (("train", 8), ("val", 6), ("test", 8)):
    raw = _raw(d=d)
    E.save_embeddings(E.embeddings_path(str(tmp_path), "d", "c", split), raw["embeddings"],
                      raw["labels"], raw["keys"])
  source = EmbeddingSource(root=str(tmp_path), dataset="d", crop="c")
  with pytest.raises(E.EmbeddingDataError) as error:
    source.load_all(("train", "val", "test"))
  message = str(error.value)
  assert message.startswith(os.path.join(str(tmp_path), "d", "c", "val_embeddings.pkl") +
                            " holds 6-dimensional embeddings but ")
  assert message.endswith("train_embeddings.pkl holds 8-dimensional ones: all splits must "
                          "come from the same backbone")
  assert len(message) < 300


# ------------------------------------------------------------------ round two (issue 26)


def test_npz_with_an_object_array_says_object_arrays_are_not_allowed(tmp_path):
  """Was "claims shape (6,) of object (...) but holds ... bytes"."""
  path = _split_path(tmp_path, ".npz")
  raw = _raw()
  with open(path, "wb") as f:
    np.savez(f, embeddings=raw["embeddings"], labels=raw["labels"],
             keys=raw["keys"].astype(object))
  with pytest.raises(E.EmbeddingDataError) as error:
    E.load_split(str(tmp_path), "d", "c", "train")
  assert str(error.value) == (f"{path}: array keys.npy holds Python objects; object arrays "
                              "are not allowed (store keys as strings)")


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_dangling_link_and_link_loop_are_named_as_such(tmp_path, suffix):
  """Both were "No embeddings file for split 'train'"."""
  path = _split_path(tmp_path, suffix)
  os.symlink(str(tmp_path / "gone.pkl"), path)
  with pytest.raises(E.EmbeddingDataError) as error:
    E.load_split(str(tmp_path), "d", "c", "train")
  assert str(error.value) == (f"{path}: is a dangling symbolic link (to {tmp_path}/gone.pkl, "
                              "which does not exist)")
  os.remove(path)
  os.symlink(path, path)
  with pytest.raises(E.EmbeddingDataError) as error:
    E.load_split(str(tmp_path), "d", "c", "train")
  assert str(error.value) == f"{path}: is a symbolic link loop (it never reaches a file)"


def test_bad_key_names_the_file(tmp_path):
  raw = _raw()
  raw["keys"][3] = "x.JPEG"
  path = _write(tmp_path / "bad.pkl", raw)
  with pytest.raises(E.EmbeddingDataError) as error:
    E.load_embeddings(path)
  assert str(error.value) == (f"{path}: key 'x.JPEG' is not of the form "
                              "'<id>-<class>-<file>'")


def test_labels_that_disagree_with_the_keys_warn_in_one_line(tmp_path, capsys):
  raw = _raw()  # keys: classes n00, n01 alternating; labels 0, 1 alternating
  E.load_embeddings(_write(tmp_path / "ok.pkl", raw))
  assert capsys.readouterr().err == ""
  raw["labels"] = np.array([0, 1, 0, 1, 1, 1])  # row 4 (class n00) has label 1
  path = _write(tmp_path / "mixed.pkl", raw)
  data = E.load_embeddings(path)
  assert capsys.readouterr().err == (
      f"warning: {path}: its labels disagree with the classes named in its keys (row 4 has "
      "label 1, as class 'n01', but its key names class 'n00'); the classes are taken from "
      "the keys\n")
  assert data.class_names == ["n00", "n01"]  # from the keys, as before
  raw["labels"] = np.array([0, 1, 2, 1, 0, 1])  # class n00 labelled 0 and 2
  E.load_embeddings(_write(tmp_path / "split.pkl", raw))
  assert "(row 2 of class 'n00' has label 2, other rows 0)" in capsys.readouterr().err


def test_val_and_test_classes_named_like_train_classes_warn_in_one_line(tmp_path, capsys):
  root = str(tmp_path)
  for split, names in (("train", ["a", "b"]), ("val", ["c", "d"]), ("test", ["b", "e"])):
    keys = [E.make_key(i, names[i % 2]) for i in range(6)]
    E.save_embeddings(E.embeddings_path(root, "d", "c", split), _raw()["embeddings"],
                      np.arange(6) % 2, keys)
  capsys.readouterr()
  EmbeddingSource(root=root, dataset="d", crop="c").load_all(("train", "val", "test"))
  test_file, train_file = (E.embeddings_path(root, "d", "c", s) for s in ("test", "train"))
  assert capsys.readouterr().err == (
      f"warning: {test_file} has 1 class(es) named like classes of {train_file} (first: "
      "'b'): test classes should be new to meta-training\n")
