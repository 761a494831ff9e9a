"""Where meta-training gets its embeddings: a root in the released layout, built on demand."""

import dataclasses
import hashlib
import os
import re
from typing import Callable, Dict, Optional, Sequence

import gin

from leo_tf.data.embeddings import (EmbeddingSet, find_embeddings_file, load_split,
                                    require_same_dim, warn_shared_classes)
from leo_tf.data.splits import SPLITS
from leo_tf.config_checks import check_types
from leo_tf.runtime import paths


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EmbeddingSource:
  """``<root>/<dataset>/<crop>/<split>_embeddings.{pkl,npz}``; ``root`` may name
  ``$LEO_TF_DATA`` (leo_tf/runtime/paths.py).

  ``builder``, when set (e.g. ``@build_image_embeddings``), is called as
  ``builder(root=..., dataset=..., crop=...)`` if any split file is missing, so one
  command can go from nothing to a trained model.

  ``derived_from``, when set, names what the files are computed from (an image folder):
  they then live in ``<root>/<dataset>_<its name>_<digest of its absolute path>/<crop>``
  (``folder``), so embeddings of two image folders are never mixed up.
  """
  root: str = "$LEO_TF_DATA/embeddings"
  dataset: str = "miniImageNet"
  crop: str = "center"
  builder: Optional[Callable[..., None]] = None
  l2_normalize: bool = True
  derived_from: Optional[str] = None

  def __post_init__(self):
    check_types(self)
    # Absolute, $LEO_TF_DATA expanded: the same files from any working directory.
    object.__setattr__(self, "root", paths.resolve(self.root))
    if self.derived_from is not None:
      object.__setattr__(self, "derived_from", paths.resolve(self.derived_from))

  @property
  def folder(self) -> str:
    """The directory under ``root`` that holds ``<crop>/<split>_embeddings.*``."""
    if self.derived_from is None:
      return self.dataset
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", os.path.basename(self.derived_from.rstrip("/")))
    digest = hashlib.sha256(self.derived_from.encode("utf-8")).hexdigest()[:10]
    return f"{self.dataset}_{name}_{digest}"

  def missing_splits(self, splits: Sequence[str] = SPLITS):
    return [s for s in splits if find_embeddings_file(
        self.root, self.folder, self.crop, s, required=False) is None]

  def ensure(self, splits: Sequence[str] = SPLITS) -> None:
    """Builds the files when some are missing and a builder is configured."""
    if self.missing_splits(splits) and self.builder is not None:
      self.builder(root=self.root, dataset=self.folder, crop=self.crop)

  def load(self, split: str) -> EmbeddingSet:
    return load_split(self.root, self.folder, self.crop, split, self.l2_normalize)

  def load_all(self, splits: Sequence[str] = SPLITS) -> Dict[str, EmbeddingSet]:
    self.ensure(splits)
    sets = require_same_dim({s: self.load(s) for s in dict.fromkeys(splits)})
    warn_shared_classes(sets)
    return sets
