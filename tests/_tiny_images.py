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


# ------------------------------------------------------------------ a tiny image folder

SHAPES = ("square", "disc", "triangle", "bar", "cross")
# How files are written, in turn: (extension, Pillow mode); the palette and RGBA modes are
# converted to RGB when read, grayscale copied to three channels.
FORMATS = ((".png", "RGB"), (".jpg", "RGB"), (".png", "L"), (".png", "RGBA"), (".png", "P"),
           (".jpeg", "L"))


def _draw(shape, colour, size, rng):
  from PIL import Image, ImageDraw
  image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
  draw = ImageDraw.Draw(image)
  lo, hi = size * (0.2 + 0.1 * rng.random()), size * (0.8 - 0.1 * rng.random())
  if shape == "square":
    draw.rectangle([lo, lo, hi, hi], fill=colour)
  elif shape == "disc":
    draw.ellipse([lo, lo, hi, hi], fill=colour)
  elif shape == "triangle":
    draw.polygon([(lo, hi), (hi, hi), ((lo + hi) / 2, lo)], fill=colour)
  elif shape == "bar":
    draw.rectangle([lo, size * 0.4, hi, size * 0.6], fill=colour)
  else:
    draw.rectangle([lo, size * 0.4, hi, size * 0.6], fill=colour)
    draw.rectangle([size * 0.4, lo, size * 0.6, hi], fill=colour)
  return image


def write_tiny_folder(root: str, num_classes: int = 30, split_dirs: bool = False,
                      seed: int = 0) -> dict:
  """``num_classes`` classes (a shape in a colour) of 6-12 pictures each, 20-40 px, in
  the formats and modes of FORMATS, and one corrupt file: ``root/<class>/*``, or with
  ``split_dirs`` ``root/{train,val,test}/<class>/*`` (the first 18 / 6 / 6 classes at 30).
  Returns {"counts": {class: pictures}, "corrupt": its path}."""
  import os
  rng = np.random.default_rng(seed)
  counts, written = {}, 0
  sizes = {"val": max(1, num_classes // 5), "test": max(1, num_classes // 5)}
  sizes["train"] = num_classes - sizes["val"] - sizes["test"]
  splits = [s for s in ("train", "val", "test") for _ in range(sizes[s])]
  for c in range(num_classes):
    name = f"{SHAPES[c % len(SHAPES)]}_{c:02d}"
    directory = os.path.join(root, splits[c], name) if split_dirs else os.path.join(root, name)
    os.makedirs(directory)
    colour = tuple(int(v) for v in rng.integers(80, 256, 3))
    counts[name] = int(rng.integers(6, 13))
    for i in range(counts[name]):
      extension, mode = FORMATS[written % len(FORMATS)]
      written += 1
      image = _draw(SHAPES[c % len(SHAPES)], colour, int(rng.integers(20, 41)), rng)
      image = image.convert(mode) if mode != "P" else image.quantize(16)
      image.save(os.path.join(directory, f"{i:02d}{extension}"))
  corrupt = os.path.join(directory, "broken.jpg")
  with open(corrupt, "wb") as f:
    f.write(b"\xff\xd8\xff not really a jpeg")
  return {"counts": counts, "corrupt": corrupt}
