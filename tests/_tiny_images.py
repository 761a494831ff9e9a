"""A tiny synthetic ImageSplit stand-in for backbone tests: class c draws a bright
square at a position of its own on a noisy background, so a small WRN learns it in a
few dozen steps."""

import dataclasses
from typing import List, Optional, Tuple

import gin
import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class TinySplit:
  dataset: tf.data.Dataset
  class_names: List[str]
  num_examples: int
  image_shape: Optional[Tuple[int, int, int]]


def tiny_arrays(num_classes=4, per_class=12, size=16, seed=0):
  rng = np.random.RandomState(seed)
  images, labels = [], []
  for c in range(num_classes):
    row, col = divmod(c, 2)
    for _ in range(per_class):
      img = rng.randint(0, 60, size=(size, size, 1))
      r0, c0 = 2 + 7 * row + rng.randint(0, 2), 2 + 7 * col + rng.randint(0, 2)
      img[r0:r0 + 5, c0:c0 + 5] = 255
      images.append(img.astype(np.uint8))
      labels.append(c)
  return np.stack(images), np.array(labels, np.int32)


def tiny_split(num_classes=4, per_class=12, size=16, seed=0, prefix="c"):
  images, labels = tiny_arrays(num_classes, per_class, size, seed)
  keys = np.array([f"img_{i:04d}.png" for i in range(len(labels))])
  ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "key": keys})
  return TinySplit(ds, [f"{prefix}{c}" for c in range(num_classes)], len(labels),
                   (size, size, 1))


@gin.configurable
def tiny_source(split: str) -> TinySplit:
  """An image_source(split) over three disjoint sets of tiny classes."""
  offset = {"train": 0, "val": 1, "test": 2}[split]
  return tiny_split(num_classes=4, per_class=6 if split != "train" else 12, seed=offset,
                    prefix=f"{split}c")
