"""The three splits of a few-shot dataset, and the common form of one image split.

Classes, not examples, are split: meta-training, validation and test episodes never
share a class.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

SPLITS = ("train", "val", "test")
# miniImageNet's class proportions (64/16/20 of 100 classes).
SPLIT_FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_sizes(num_classes: int) -> Dict[str, int]:
  """miniImageNet's 64/16/20 class proportions, each split non-empty."""
  val = max(1, round(SPLIT_FRACTIONS["val"] * num_classes))
  test = max(1, round(SPLIT_FRACTIONS["test"] * num_classes))
  return {"train": num_classes - val - test, "val": val, "test": test}


def split_classes(class_names: Sequence[str], seed: int = 0) -> Dict[str, List[str]]:
  """Seeded 64/16/20 split of the classes (each sorted) into train/val/test."""
  names = sorted(class_names)
  order = np.random.default_rng([seed, 1]).permutation(len(names))
  sizes, out, start = split_sizes(len(names)), {}, 0
  for split in SPLITS:
    out[split] = sorted(names[i] for i in order[start:start + sizes[split]])
    start += sizes[split]
  return out


@dataclasses.dataclass
class ImageSplit:
  """One split of an image dataset, in the form the backbone code consumes.

  ``dataset`` yields {'image': uint8 [H, W, C], 'label': int32 class index within
  the split, 'key': tf.string unique per example}; ``class_names[label]`` names the
  class (never contains '-'); ``image_shape`` is (H, W, C) when fixed, else None.
  """
  dataset: tf.data.Dataset
  class_names: List[str]
  num_examples: int
  image_shape: Optional[Tuple[int, int, int]]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)
