"""Embedding files in the layout the LEO authors released.

``<root>/<dataset>/<crop>/<split>_embeddings.pkl`` holds a pickled dict with
``embeddings`` float [n, d], ``labels`` [n] and ``keys`` [n] strings of the form
``"<id>-<wnid>-<file>"``; the class of an example is the wnid inside its key. The same
dict can also be stored as ``.npz`` (no pickle at all).

Pickles are code: they are read with an unpickler that admits only what numpy arrays,
dicts, lists, strings and numbers need, and no array larger than the file could hold
(``safe_pickle``), so a hostile file is refused before anything in it runs.
"""

import dataclasses
import errno
import math
import os
import pickle
import stat
import sys
import zipfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from leo_tf.data import safe_pickle
from leo_tf.runtime import files

REQUIRED_KEYS = ("embeddings", "labels", "keys")
NORM_FLOOR = 1e-12  # of the L2 normalisation, as the authors' data provider


class EmbeddingDataError(ValueError):
  """An embedding file is missing, malformed or cannot support the request."""


def embeddings_path(root: str, dataset: str, crop: str, split: str, suffix: str = ".pkl") -> str:
  """Path of one split's file in the released layout."""
  return os.path.join(root, dataset, crop, f"{split}_embeddings{suffix}")


def find_embeddings_file(root: str, dataset: str, crop: str, split: str,
                         required: bool = True) -> Optional[str]:
  """The .pkl file of a split, else its .npz twin; if neither exists, a clear error
  (None when not ``required``)."""
  candidates = [embeddings_path(root, dataset, crop, split, s) for s in (".pkl", ".npz")]
  # lexists: a dangling link or a loop is named as what it is when read, not as missing
  found = next((path for path in candidates if os.path.lexists(path)), None)
  if found or not required:
    return found
  raise EmbeddingDataError(
      f"No embeddings file for split '{split}': looked for {' and '.join(candidates)}. "
      "Point the embedding root at the released LEO embeddings or build them with "
      "leo-embed.")


# ---------------------------------------------------------------------------------
# Reading a file: only regular files, sizes checked before anything is allocated.

# A compressed .npz may expand this much (float embeddings barely compress; a zip
# bomb expands ~1000x).
_NPZ_MAX_EXPANSION = 100
_MAX_KEY_LENGTH = 4096


def _regular_file_size(path: str) -> int:
  """The size of ``path``, or one clear error if it is not a readable regular file
  (a directory, a FIFO or a device such as /dev/zero would hang or never end)."""
  try:
    info = os.stat(path)
  except FileNotFoundError:
    if os.path.islink(path):
      raise EmbeddingDataError(f"{path}: is a dangling symbolic link (to "
                               f"{os.readlink(path)}, which does not exist)") from None
    raise EmbeddingDataError(f"embeddings file not found: {path}") from None
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise EmbeddingDataError(f"{path}: is a symbolic link loop (it never reaches a "
                               "file)") from None
    raise EmbeddingDataError(f"{path}: cannot read it: {e.strerror}") from None
  if not stat.S_ISREG(info.st_mode):
    kind = ("a directory" if stat.S_ISDIR(info.st_mode) else
            "a FIFO" if stat.S_ISFIFO(info.st_mode) else
            "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
            "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
    raise EmbeddingDataError(f"{path}: is {kind}, not a regular embeddings file")
  return info.st_size


def _read_pickle(path: str):
  size = _regular_file_size(path)
  try:
    with open(path, "rb") as f:
      data = f.read(size + 1)
  except OSError as e:
    raise EmbeddingDataError(f"{path}: cannot read it: {e.strerror or e}") from None
  try:
    return safe_pickle.loads(data)
  except pickle.UnpicklingError as e:
    raise EmbeddingDataError(f"{path}: {e}") from e


def _npz_claims(path: str, size: int) -> None:
  """Every array's header claim must fit its archive member, and the members the file."""
  with zipfile.ZipFile(path) as archive:
    members = archive.infolist()
    total = sum(m.file_size for m in members)
    if total > _NPZ_MAX_EXPANSION * size + (1 << 20):
      raise EmbeddingDataError(
          f"{path}: its arrays would expand to {total:,} bytes from a {size:,}-byte file; "
          "refusing it as a zip bomb")
    for member in members:
      with archive.open(member) as f:
        fmt = np.lib.format
        read_header = (fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0)
                       else fmt.read_array_header_2_0)
        shape, _, dtype = read_header(f)
      if dtype.hasobject:
        raise EmbeddingDataError(f"{path}: array {member.filename} holds Python objects; "
                                 "object arrays are not allowed (store keys as strings)")
      claimed = math.prod(shape) * dtype.itemsize
      if claimed > member.file_size:
        raise EmbeddingDataError(
            f"{path}: array {member.filename} claims shape {shape} of {dtype} "
            f"({claimed:,} bytes) but holds {member.file_size:,} bytes")


def _read_npz(path: str):
  size = _regular_file_size(path)
  try:
    open(path, "rb").close()  # an unreadable file is an OSError, named as such
  except OSError as e:
    raise EmbeddingDataError(f"{path}: cannot read it: {e.strerror or e}") from None
  try:
    _npz_claims(path, size)
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except EmbeddingDataError:
    raise
  except Exception as e:  # zipfile, numpy and the OS report damage with many types
    raise EmbeddingDataError(f"{path}: not a readable .npz file ({e})") from e


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

  def keep_classes(self, keep: np.ndarray) -> "EmbeddingSet":
    """The set restricted to the classes where ``keep`` [num_classes] is True, class ids
    renumbered in their order; ``self`` when every class is kept."""
    keep = np.asarray(keep, bool)
    if keep.all():
      return self
    rows = keep[self.class_ids]
    new_ids = np.cumsum(keep) - 1
    return dataclasses.replace(
        self, embeddings=self.embeddings[rows], class_ids=new_ids[self.class_ids[rows]].astype(
            np.int32), class_names=[n for n, k in zip(self.class_names, keep) if k],
        keys=self.keys[rows])

  def l2_normalized(self) -> "EmbeddingSet":
    out = dataclasses.replace(self, embeddings=l2_normalize_rows(self.embeddings))
    _require_finite(out.embeddings, out.keys, self.source, "after L2 normalisation")
    return out

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


def _require_finite(embeddings: np.ndarray, keys, source: str, when: str = "") -> None:
  finite = np.isfinite(embeddings).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise EmbeddingDataError(
        f"{source}: {bad.size} embedding row(s) hold NaN or Inf{' ' + when if when else ''}"
        f" or values beyond float32's range (first at row {bad[0]}, key {keys[bad[0]]!r})")


def l2_normalize_rows(x: np.ndarray, floor: float = NORM_FLOOR) -> np.ndarray:
  """Rows divided by max(norm, floor), without overflow: float32 rows of 1e20 have
  norms beyond float32's range, so each row is scaled by its largest |value| first
  (the served graph does the same, leo_tf/serving/graph.py)."""
  x = np.asarray(x, np.float32)
  scale = np.max(np.abs(x), axis=1, keepdims=True)
  scale = np.where(scale > 0, scale, np.float32(1))
  y = x / scale
  norms = np.linalg.norm(y, axis=1, keepdims=True)
  return (y / np.maximum(norms, floor / scale)).astype(np.float32)


def warn(message: str) -> None:
  """A one-line warning on stderr: the data is used, but probably not as meant."""
  print(f"warning: {message}", file=sys.stderr)


def _label_disagreement(labels, classes: List[str]) -> Optional[str]:
  """Where a file's numeric labels and its keys' classes first stop being one-to-one,
  else None (labels that are not numbers are not compared)."""
  labels = np.asarray(labels)
  if labels.dtype.kind not in "iuf" or labels.size != len(classes):
    return None
  class_of, label_of = {}, {}
  for row, (label, name) in enumerate(zip(labels.reshape(-1).tolist(), classes)):
    if class_of.setdefault(label, name) != name:
      return (f"row {row} has label {label:g}, as class {class_of[label]!r}, but its key "
              f"names class {name!r}")
    if label_of.setdefault(name, label) != label:
      return f"row {row} of class {name!r} has label {label:g}, other rows {label_of[name]:g}"
  return None


def validate_embedding_dict(raw, source: str) -> EmbeddingSet:
  """Checks a raw dict from a file and turns it into an :class:`EmbeddingSet`."""
  if not isinstance(raw, dict):
    raise EmbeddingDataError(f"{source}: expected a dict, found {type(raw).__name__}")
  missing = [k for k in REQUIRED_KEYS if k not in raw]
  if missing:
    raise EmbeddingDataError(
        f"{source}: missing key(s) {missing}; an embeddings file holds "
        f"{list(REQUIRED_KEYS)}")
  embeddings = raw["embeddings"]
  if not isinstance(embeddings, np.ndarray):  # nested lists could share rows via the memo
    raise EmbeddingDataError(
        f"{source}: 'embeddings' must be a numpy array, found {type(embeddings).__name__}")
  if embeddings.ndim != 2:
    raise EmbeddingDataError(
        f"{source}: 'embeddings' must have rank 2 [n, d], found shape {embeddings.shape}")
  if not np.issubdtype(embeddings.dtype, np.floating):
    raise EmbeddingDataError(
        f"{source}: 'embeddings' must be floating point, found dtype {embeddings.dtype}")
  keys = [k.decode("latin1") if isinstance(k, bytes) else str(k)
          for k in np.asarray(raw["keys"], dtype=object).reshape(-1)]
  long = [k for k in keys if len(k) > _MAX_KEY_LENGTH]
  if long:
    raise EmbeddingDataError(f"{source}: {len(long)} key(s) longer than {_MAX_KEY_LENGTH} "
                             f"characters (first: {long[0][:40]!r}...)")
  labels = raw["labels"]  # only counted: the classes come from the keys
  if not isinstance(labels, (np.ndarray, list, tuple)):
    raise EmbeddingDataError(
        f"{source}: 'labels' must be an array or a list, found {type(labels).__name__}")
  num_labels = labels.size if isinstance(labels, np.ndarray) else len(labels)
  n = embeddings.shape[0]
  if len(keys) != n or num_labels != n:
    raise EmbeddingDataError(
        f"{source}: lengths differ: {n} embeddings, {num_labels} labels, "
        f"{len(keys)} keys")
  if n == 0:
    raise EmbeddingDataError(f"{source}: the file holds no examples")
  if embeddings.shape[1] == 0:
    raise EmbeddingDataError(
        f"{source}: the embeddings have no features (shape {embeddings.shape})")
  # After the cast: float64 values beyond float32's range become Inf here, not later.
  with np.errstate(over="ignore"):
    embeddings = embeddings.astype(np.float32)
  _require_finite(embeddings, keys, source)
  try:
    classes = [class_from_key(k) for k in keys]
  except EmbeddingDataError as e:
    raise EmbeddingDataError(f"{source}: {e}") from None
  disagreement = _label_disagreement(labels, classes)
  if disagreement:
    warn(f"{source}: its labels disagree with the classes named in its keys "
         f"({disagreement}); the classes are taken from the keys")
  class_names = sorted(set(classes))
  index = {name: i for i, name in enumerate(class_names)}
  return EmbeddingSet(
      embeddings=embeddings,
      class_ids=np.array([index[c] for c in classes], np.int32),
      class_names=class_names,
      keys=np.array(keys),
      source=source)


def load_embeddings(path: str) -> EmbeddingSet:
  """Reads one split from a ``.pkl`` (restricted) or ``.npz`` file."""
  raw = _read_npz(path) if path.endswith(".npz") else _read_pickle(path)
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


def require_same_dim(sets: Dict[str, EmbeddingSet]) -> Dict[str, EmbeddingSet]:
  """All splits must come from one backbone: checked when loaded, not at the first
  validation."""
  dims = {split: data.dim for split, data in sets.items()}
  if len(set(dims.values())) > 1:
    first = next(iter(sets))
    other = next(s for s in sets if dims[s] != dims[first])
    raise EmbeddingDataError(
        f"{sets[other].source} holds {dims[other]}-dimensional embeddings but "
        f"{sets[first].source} holds {dims[first]}-dimensional ones: all splits must come "
        "from the same backbone")
  return sets


def warn_shared_classes(sets: Dict[str, EmbeddingSet]) -> None:
  """One warning line per split whose classes are named like meta-training's: few-shot
  evaluation is on classes the model has never seen."""
  if "train" not in sets:
    return
  train = set(sets["train"].class_names)
  for split, data in sets.items():
    shared = sorted(train.intersection(data.class_names)) if split != "train" else []
    if shared:
      warn(f"{data.source} has {len(shared)} class(es) named like classes of "
           f"{sets['train'].source} (first: {shared[0]!r}): {split} classes should be new "
           "to meta-training")


def make_key(index: int, class_name: str, file_name: Optional[str] = None) -> str:
  """A key in the released form; '-' inside the class name would break parsing."""
  if "-" in class_name:
    raise EmbeddingDataError(f"class name {class_name!r} may not contain '-'")
  return f"{index}-{class_name}-{file_name or f'{class_name}_{index}'}"
