"""Embedding files in the layout the LEO authors released.

``<root>/<dataset>/<crop>/<split>_embeddings.pkl`` holds a pickled dict with
``embeddings`` float [n, d], ``labels`` [n] and ``keys`` [n] strings of the form
``"<id>-<wnid>-<file>"``; the class of an example is the wnid inside its key. The same
dict can also be stored as ``.npz`` (no pickle at all).

Pickles are code: they are read with an unpickler that admits only what numpy arrays,
dicts, lists, strings and numbers need, so a hostile file is refused before anything
in it runs.
"""

import dataclasses
import io
import os
import pickle
from typing import Dict, List, Optional, Sequence

import numpy as np

from leo_tf.runtime import files

REQUIRED_KEYS = ("embeddings", "labels", "keys")


class EmbeddingDataError(ValueError):
  """An embedding file is missing, malformed or cannot support the request."""


def embeddings_path(root: str, dataset: str, crop: str, split: str,
                    suffix: str = ".pkl") -> str:
  """Path of one split's file in the released layout."""
  return os.path.join(root, dataset, crop, f"{split}_embeddings{suffix}")


def find_embeddings_file(root: str, dataset: str, crop: str, split: str) -> str:
  """The .pkl file of a split, else its .npz twin; a clear error if neither exists."""
  candidates = [embeddings_path(root, dataset, crop, split, s) for s in (".pkl", ".npz")]
  for path in candidates:
    if os.path.exists(path):
      return path
  raise EmbeddingDataError(
      f"No embeddings file for split '{split}': looked for {' and '.join(candidates)}. "
      "Point the embedding root at the released LEO embeddings or build them with "
      "leo-embed.")


# ---------------------------------------------------------------------------------
# Restricted unpickling.

# (module, name) pairs a numpy/py2 embeddings pickle may legitimately reference.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _latin1_encode(text, encoding="latin1"):
  """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to rebuild bytes."""
  if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
    raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
  return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that only admits numpy arrays, dicts, lists, strings and numbers."""

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return super().find_class(module.replace("numpy.core", "numpy._core"), name)
    if (module, name) == ("_codecs", "encode"):
      return _latin1_encode
    raise pickle.UnpicklingError(
        f"refusing to load '{module}.{name}': embedding pickles may only hold numpy "
        "arrays, dicts, lists, strings and numbers")


def safe_load_pickle(data: bytes):
  """Unpickles ``data`` (Python 2 or 3) admitting only plain data types."""
  try:
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
  except pickle.UnpicklingError as e:
    raise pickle.UnpicklingError(f"corrupt, truncated or refused pickle: {e}") from e
  except Exception as e:  # truncated or corrupt streams raise many different types
    raise pickle.UnpicklingError(f"corrupt or truncated pickle: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------------
# The in-memory form.


@dataclasses.dataclass
class EmbeddingSet:
  """One split: embeddings [n, d] float32, integer class ids [n], the class names."""
  embeddings: np.ndarray
  class_ids: np.ndarray
  class_names: List[str]
  keys: np.ndarray
  source: str = "<memory>"

  @staticmethod
  def from_arrays(embeddings: np.ndarray, labels: np.ndarray,
                  source: str = "<arrays>") -> "EmbeddingSet":
    """One split from arrays: embeddings [n, d] and labels [n] (ints or strings without
    '-'), checked as a file's would be; not L2-normalised (see ``l2_normalized``)."""
    labels = np.asarray(labels).reshape(-1)
    keys = [make_key(i, str(label)) for i, label in enumerate(labels)]
    return validate_embedding_dict(
        {"embeddings": embeddings, "labels": labels, "keys": keys}, source)

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.class_ids, minlength=self.num_classes)

  def require_examples(self, num_classes: int, examples_per_class: int) -> None:
    """Raises unless ``num_classes`` classes have >= ``examples_per_class`` examples each."""
    counts = self.class_counts()
    if self.num_classes < num_classes:
      raise EmbeddingDataError(
          f"{self.source}: an episode needs {num_classes} classes but the file has only "
          f"{self.num_classes}")
    short = [(self.class_names[c], int(n)) for c, n in enumerate(counts)
             if n < examples_per_class]
    if short:
      listed = ", ".join(f"{name} ({n})" for name, n in short[:5])
      more = f" and {len(short) - 5} more" if len(short) > 5 else ""
      raise EmbeddingDataError(
          f"{self.source}: an episode needs {examples_per_class} examples per class "
          f"(shots + queries) but {len(short)} class(es) have fewer: {listed}{more}")

  def l2_normalized(self) -> "EmbeddingSet":
    norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
    return dataclasses.replace(self, embeddings=(self.embeddings /
                                                 np.maximum(norms, 1e-12)).astype(np.float32))

  @staticmethod
  def concatenate(sets: Sequence["EmbeddingSet"]) -> "EmbeddingSet":
    """Joins splits (e.g. train + val) into one set with disjoint class ids."""
    names = [n for s in sets for n in s.class_names]
    if len(set(names)) != len(names):
      raise EmbeddingDataError("cannot concatenate splits that share class names")
    offsets = np.cumsum([0] + [s.num_classes for s in sets[:-1]])
    return EmbeddingSet(
        embeddings=np.concatenate([s.embeddings for s in sets]),
        class_ids=np.concatenate([s.class_ids + o for s, o in zip(sets, offsets)]),
        class_names=names,
        keys=np.concatenate([s.keys for s in sets]),
        source=" + ".join(s.source for s in sets))


def class_from_key(key: str) -> str:
  """The wnid (class) inside a key "<id>-<wnid>-<file>"."""
  parts = key.split("-")
  if len(parts) < 3 or not parts[1]:
    raise EmbeddingDataError(f"key {key!r} is not of the form '<id>-<class>-<file>'")
  return parts[1]


def _to_str(key) -> str:
  return key.decode("latin1") if isinstance(key, bytes) else str(key)


def validate_embedding_dict(raw, source: str) -> EmbeddingSet:
  """Checks a raw dict from a file and turns it into an :class:`EmbeddingSet`."""
  if not isinstance(raw, dict):
    raise EmbeddingDataError(f"{source}: expected a dict, found {type(raw).__name__}")
  missing = [k for k in REQUIRED_KEYS if k not in raw]
  if missing:
    raise EmbeddingDataError(
        f"{source}: missing key(s) {missing}; an embeddings file holds "
        f"{list(REQUIRED_KEYS)}")
  embeddings = np.asarray(raw["embeddings"])
  if embeddings.ndim != 2:
    raise EmbeddingDataError(
        f"{source}: 'embeddings' must have rank 2 [n, d], found shape {embeddings.shape}")
  if not np.issubdtype(embeddings.dtype, np.floating):
    raise EmbeddingDataError(
        f"{source}: 'embeddings' must be floating point, found dtype {embeddings.dtype}")
  keys = [_to_str(k) for k in np.asarray(raw["keys"]).reshape(-1)]
  labels = np.asarray(raw["labels"]).reshape(-1)
  n = embeddings.shape[0]
  if len(keys) != n or labels.shape[0] != n:
    raise EmbeddingDataError(
        f"{source}: lengths differ: {n} embeddings, {labels.shape[0]} labels, "
        f"{len(keys)} keys")
  if n == 0:
    raise EmbeddingDataError(f"{source}: the file holds no examples")
  finite = np.isfinite(embeddings).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise EmbeddingDataError(
        f"{source}: {bad.size} embedding row(s) hold NaN or Inf (first at row {bad[0]}, "
        f"key {keys[bad[0]]!r})")
  classes = [class_from_key(k) for k in keys]
  class_names = sorted(set(classes))
  index = {name: i for i, name in enumerate(class_names)}
  return EmbeddingSet(
      embeddings=embeddings.astype(np.float32),
      class_ids=np.array([index[c] for c in classes], np.int32),
      class_names=class_names,
      keys=np.array(keys),
      source=source)


def load_embeddings(path: str) -> EmbeddingSet:
  """Reads one split from a ``.pkl`` (restricted) or ``.npz`` file."""
  if not os.path.exists(path):
    raise EmbeddingDataError(f"embeddings file not found: {path}")
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as f:
        raw = {k: f[k] for k in f.files}
    except Exception as e:
      raise EmbeddingDataError(f"{path}: not a readable .npz file ({e})") from e
  else:
    with open(path, "rb") as f:
      data = f.read()
    try:
      raw = safe_load_pickle(data)
    except pickle.UnpicklingError as e:
      raise EmbeddingDataError(f"{path}: {e}") from e
  return validate_embedding_dict(raw, path)


def save_embeddings(path: str, embeddings: np.ndarray, labels: np.ndarray,
                    keys: Sequence[str]) -> None:
  """Writes one split in the released layout (.pkl, protocol 2) or as .npz.

  The write goes to a temporary file that is renamed into place, so a crash never
  leaves a half-written file under the final name.
  """
  raw = {"embeddings": np.asarray(embeddings, np.float32),
         "labels": np.asarray(labels, np.int64),
         "keys": np.asarray([str(k) for k in keys])}
  validate_embedding_dict(raw, path)
  with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
    if path.endswith(".npz"):
      np.savez(f, **raw)
    else:
      pickle.dump(raw, f, protocol=2)


def load_split(root: str, dataset: str, crop: str, split: str,
               l2_normalize: bool = True) -> EmbeddingSet:
  """Loads ``split`` from the released layout, L2-normalised as the authors' provider did."""
  data = load_embeddings(find_embeddings_file(root, dataset, crop, split))
  return data.l2_normalized() if l2_normalize else data


def load_splits(root: str, dataset: str, crop: str, splits: Sequence[str],
                l2_normalize: bool = True) -> Dict[str, EmbeddingSet]:
  return {s: load_split(root, dataset, crop, s, l2_normalize) for s in splits}


def make_key(index: int, class_name: str, file_name: Optional[str] = None) -> str:
  """A key in the released form; '-' inside the class name would break parsing."""
  if "-" in class_name:
    raise EmbeddingDataError(f"class name {class_name!r} may not contain '-'")
  return f"{index}-{class_name}-{file_name or f'{class_name}_{index}'}"
