"""Image sources for pre-training and embedding, all returning one ``ImageSplit``.

Sources (choose one with the gin-configurable ``image_source``):

- ``glyphs``: the built-in rendered Han characters (``glyphs.load_glyph_split``);
- ``typefaces``: the built-in typeface benchmark (``typefaces.load_typeface_split``);
- ``mini_imagenet``: ``<root>/images/*.jpg`` + ``<root>/{train,val,test}.csv`` with
  columns ``filename,label`` (the Ravi & Larochelle layout);
- ``tiered_imagenet`` / ``folder``: ``<root>/<split>/<class>/<image>``, or for
  ``folder`` also ``<root>/<class>/<image>`` with a seeded 64/16/20 class split;
- ``tfds``: any tfds image-classification dataset by name.

Files are decoded with Pillow (any format it reads; grayscale/RGBA/palette images are
converted to the requested channels). What a file that fails to decode does depends on
whose data it is:

- ``folder`` (your own images): the file is named in one warning line and skipped. A
  folder of collected pictures often holds a stray broken or non-image file, and one
  missing example changes a class's size by one, which episodes of classes of any size
  absorb; stopping hours of work for it helps nobody.
- the benchmarks (``mini_imagenet``, ``tiered_imagenet``): iteration stops with an
  ``ImageDecodeError`` naming the file. Their content is fixed, so a broken file means a
  broken copy, and numbers from a silently smaller class would not be comparable.
"""

import csv
import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import gin
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from leo_tf.data import glyph_fonts, glyphs, typefaces
from leo_tf.data.splits import SPLITS, ImageSplit, check_split, split_classes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ImageSize = Union[None, int, Tuple[int, int]]


class ImageDecodeError(ValueError):
  """An image file could not be read or decoded."""


class ImageSourceError(ValueError):
  """A dataset directory or request does not have the expected shape."""


def sanitize_class_names(names: Sequence[str]) -> List[str]:
  """Names without '-' (the embedding keys use it as separator), still unique."""
  out, used = [], set()
  for name in names:
    clean = "_".join(str(name).replace("-", " ").replace("/", " ").split()) or "class"
    out.append(glyph_fonts.unique_name(clean, used))
  return out


def _size_hw(image_size: ImageSize) -> Optional[Tuple[int, int]]:
  if image_size is None:
    return None
  if isinstance(image_size, int):
    return (image_size, image_size)
  return tuple(image_size)


# ---------------------------------------------------------------------------------
# Image files.

def read_image(path: str, channels: int = 3, size: ImageSize = None) -> np.ndarray:
  """uint8 [H, W, channels]; resized (bilinear) to ``size`` = (H, W) when given."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  try:
    with Image.open(path) as image:
      image = image.convert("L" if channels == 1 else "RGB")
      hw = _size_hw(size)
      if hw is not None and image.size != (hw[1], hw[0]):
        image = image.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
      array = np.asarray(image, dtype=np.uint8)
  except Exception as err:  # Pillow raises many types; all mean "unreadable"
    raise ImageDecodeError(f"cannot decode image file {path}: {err}") from err
  return array.reshape(array.shape[:2] + (channels,))


_SKIPPED = set()  # unreadable files already reported: one line each per process


def files_dataset(paths: Sequence[str], labels: Sequence[int], keys: Sequence[str],
                  channels: int = 3, image_size: ImageSize = None,
                  skip_unreadable: bool = False) -> tf.data.Dataset:
  """Decodes files in parallel with Pillow; order is that of ``paths``.

  An unreadable file stops iteration (ImageDecodeError) or, with ``skip_unreadable``, is
  named in one warning line and left out.
  """
  hw = _size_hw(image_size)
  blank = np.zeros((hw or (1, 1)) + (channels,), np.uint8)

  def load(path):
    try:
      return read_image(path.decode(), channels, hw), True
    except ImageDecodeError as err:
      if not skip_unreadable:
        raise
      if path not in _SKIPPED:
        _SKIPPED.add(path)
        logging.warning("skipped: %s", err)
      return blank, False

  def to_example(path, label, key):
    image, readable = tf.numpy_function(load, [path], (tf.uint8, tf.bool), stateful=False)
    image.set_shape((hw or (None, None)) + (channels,))
    return {"image": image, "label": label, "key": key}, readable

  dataset = tf.data.Dataset.from_tensor_slices(
      (list(paths), np.asarray(labels, np.int32), list(keys)))
  dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if skip_unreadable:
    dataset = dataset.filter(lambda example, readable: readable)
  return dataset.map(lambda example, readable: example)


def _files_split(root: str, files_by_class: Dict[str, List[str]], channels: int,
                 image_size: ImageSize, skip_unreadable: bool = False) -> ImageSplit:
  """ImageSplit over {class name: [paths]}; keys are paths relative to root."""
  raw_names = sorted(files_by_class)
  paths = [p for name in raw_names for p in files_by_class[name]]
  labels = [label for label, name in enumerate(raw_names) for _ in files_by_class[name]]
  keys = [os.path.relpath(p, root) for p in paths]
  hw = _size_hw(image_size)
  return ImageSplit(
      dataset=files_dataset(paths, labels, keys, channels, hw, skip_unreadable),
      class_names=sanitize_class_names(raw_names), num_examples=len(paths),
      image_shape=(hw + (channels,)) if hw else None)


def folder_split(root: str, split: str, channels: int = 3, image_size: ImageSize = None,
                 seed: int = 0, skip_unreadable: bool = True) -> ImageSplit:
  """``<root>/<split>/<class>/<files>``, else ``<root>/<class>/<files>`` split by class.

  In the second layout the classes are split 64/16/20 with ``seed`` (see
  ``split_classes``). Subdirectories without image files are ignored. Unreadable files
  are skipped with a warning unless ``skip_unreadable`` is False.
  """
  check_split(split)
  if not os.path.isdir(root):
    raise ImageSourceError(f"image directory {root} does not exist")
  has_split_dirs = any(os.path.isdir(os.path.join(root, s)) for s in SPLITS)
  directory = os.path.join(root, split) if has_split_dirs else root
  if has_split_dirs and not os.path.isdir(directory):
    raise ImageSourceError(f"{root} has split directories but no '{split}' directory")
  by_class = _class_dirs(directory)
  if not has_split_dirs:
    by_class = {name: by_class[name] for name in split_classes(list(by_class), seed)[split]}
  if not by_class:
    raise ImageSourceError(f"no class directories with images under {directory}")
  return _files_split(root, by_class, channels, image_size, skip_unreadable)


def _class_dirs(directory: str) -> Dict[str, List[str]]:
  out = {}
  for name in sorted(os.listdir(directory)):
    class_dir = os.path.join(directory, name)
    if os.path.isdir(class_dir) and not name.startswith("."):
      files = [os.path.join(class_dir, f) for f in sorted(os.listdir(class_dir))
               if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
      if files:
        out[name] = files
  return out


def tiered_imagenet_split(root: str, split: str, channels: int = 3,
                          image_size: ImageSize = 84) -> ImageSplit:
  """tieredImageNet as ``<root>/<train|val|test>/<wnid>/<image>``, 84x84 by default."""
  check_split(split)
  if not os.path.isdir(os.path.join(root, split)):
    raise ImageSourceError(
        f"tieredImageNet split directory {os.path.join(root, split)} not found; expected "
        "<root>/<train|val|test>/<wnid>/<image files>")
  return folder_split(root, split, channels, image_size, skip_unreadable=False)


def mini_imagenet_split(root: str, split: str, channels: int = 3,
                        image_size: ImageSize = 84) -> ImageSplit:
  """miniImageNet as ``<root>/images/`` + ``<root>/<split>.csv`` (filename,label)."""
  check_split(split)
  csv_path = os.path.join(root, f"{split}.csv")
  if not os.path.exists(csv_path):
    raise ImageSourceError(
        f"miniImageNet split file {csv_path} not found; expected <root>/images/ and "
        "<root>/train.csv, val.csv, test.csv with columns filename,label")
  by_class: Dict[str, List[str]] = {}
  with open(csv_path, newline="") as f:
    for row in csv.DictReader(f):
      try:
        filename, label = row["filename"].strip(), row["label"].strip()
      except (KeyError, AttributeError) as err:
        raise ImageSourceError(
            f"{csv_path}: expected columns filename,label, got {row}") from err
      by_class.setdefault(label, []).append(os.path.join(root, "images", filename))
  if not by_class:
    raise ImageSourceError(f"{csv_path} lists no images")
  return _files_split(root, by_class, channels, image_size)


# ---------------------------------------------------------------------------------
# tfds datasets by name.

_TFDS_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def tfds_split(name: str, split: str, data_dir: Optional[str] = None,
               tfds_split_name: Optional[str] = None, class_split: bool = False,
               seed: int = 0, image_key: str = "image", label_key: str = "label",
               channels: Optional[int] = None, image_size: ImageSize = None,
               download: bool = True) -> ImageSplit:
  """A tfds image-classification dataset as an ``ImageSplit``.

  class_split=False: our split reads the tfds split ``tfds_split_name`` (default
  train->'train', val->'validation', test->'test'), labels as in the dataset.
  class_split=True: the classes of ``tfds_split_name`` (default 'train') are split
  64/16/20 with ``seed`` and the examples of this split's classes are relabelled
  0..n-1 (the few-shot way of using a dataset with one label set).
  Keys are '<name>:<tfds split>:<index in that split>'.
  """
  check_split(split)
  source = tfds_split_name or ("train" if class_split else _TFDS_SPLIT_NAMES[split])
  builder = tfds.builder(name, data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  all_names = _label_names(builder, source, label_key)
  chosen = split_classes(all_names, seed)[split] if class_split else all_names
  index = {class_name: new for new, class_name in enumerate(chosen)}
  remap = tf.constant([index.get(n, -1) for n in all_names], tf.int32)  # -1: not chosen
  prefix = f"{name}:{source}:"
  dataset = builder.as_dataset(split=source, shuffle_files=False).enumerate().map(
      lambda i, ex: {"image": ex[image_key], "label": tf.gather(remap, ex[label_key]),
                     "key": tf.strings.join([prefix, tf.strings.as_string(i)])})
  if class_split:
    dataset = dataset.filter(lambda ex: ex["label"] >= 0)
  hw = _size_hw(image_size)
  dataset = dataset.map(_image_transform(channels, hw), num_parallel_calls=tf.data.AUTOTUNE)
  return ImageSplit(dataset, sanitize_class_names(chosen),
                    _tfds_count(builder, source, label_key, remap, class_split),
                    _tfds_shape(builder.info.features[image_key].shape, channels, hw))


def _label_names(builder, source: str, label_key: str) -> List[str]:
  """The dataset's class names, once ``source`` is known to be one of its splits."""
  known = list(builder.info.splits.keys())
  if known and source.isidentifier() and source not in known:
    raise ImageSourceError(
        f"tfds dataset {builder.name} has no split '{source}' (it has {known}); pass "
        "tfds_split_name=<one of them, slicing allowed> or class_split=True")
  feature = builder.info.features[label_key]
  if isinstance(feature, tfds.features.ClassLabel):
    return list(feature.names)
  raise ImageSourceError(f"label feature must be a ClassLabel, got {type(feature).__name__}")


def _tfds_count(builder, source, label_key, remap, class_split) -> int:
  """From the dataset info when it has it, else by reading the labels once."""
  if not class_split and builder.info.splits.keys():
    return builder.info.splits[source].num_examples
  labels = builder.as_dataset(split=source, shuffle_files=False).map(
      lambda ex: tf.gather(remap, ex[label_key]))
  return int(labels.reduce(np.int64(0), lambda n, label: n + tf.cast(label >= 0, tf.int64)))


def _image_transform(channels: Optional[int], hw: Optional[Tuple[int, int]]):
  def transform(ex):
    image = ex["image"]
    if channels == 3 and image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    elif channels == 1 and image.shape[-1] == 3:
      image = tf.image.rgb_to_grayscale(image)
    if hw is not None:
      image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, hw)), 0, 255),
                      tf.uint8)
    return dict(ex, image=image)
  return transform


def _tfds_shape(shape, channels, hw):
  shape = tuple(shape)
  if hw is not None:
    shape = hw + shape[2:]
  if channels is not None:
    shape = shape[:2] + (channels,)
  return shape if all(d is not None for d in shape) else None


def with_channels(image_split: ImageSplit, channels: Optional[int]) -> ImageSplit:
  """The split with 1 or 3 channels (None: unchanged)."""
  if channels is None:
    return image_split
  dataset = image_split.dataset.map(_image_transform(channels, None),
                                    num_parallel_calls=tf.data.AUTOTUNE)
  shape = image_split.image_shape
  return dataclasses.replace(image_split, dataset=dataset,
                             image_shape=shape and shape[:2] + (channels,))


# ---------------------------------------------------------------------------------
# Choosing a source from gin.

SOURCE_KINDS = ("glyphs", "typefaces", "mini_imagenet", "tiered_imagenet", "folder", "tfds")


@gin.configurable
def image_source(split: str, kind: str = "glyphs", root: Optional[str] = None,
                 name: Optional[str] = None, channels: Optional[int] = None,
                 image_size: ImageSize = None, seed: int = 0,
                 class_split: bool = False) -> ImageSplit:
  """One split of the configured source; gin picks ``kind`` and its arguments.

  root: data directory (tfds data_dir for 'glyphs' and 'tfds'; the dataset folder
  otherwise). name: the tfds dataset name (kind='tfds'). channels/image_size: None
  keeps the source's own (3 channels for files, 1 for glyphs; 84x84 for
  mini/tieredImageNet). Other glyph settings (num_classes, seed, ...) are bound on
  ``load_glyph_split``; ``seed`` and ``class_split`` apply to 'folder' and 'tfds'.
  """
  check_split(split)
  if kind in ("glyphs", "typefaces"):
    load = glyphs.load_glyph_split if kind == "glyphs" else typefaces.load_typeface_split
    kwargs = {"image_size": image_size} if image_size is not None else {}
    return with_channels(load(split, data_dir=root, **kwargs), channels)
  if kind == "tfds":
    if not name:
      raise ValueError("image_source(kind='tfds') needs name=<tfds dataset name>")
    return tfds_split(name, split, data_dir=root, class_split=class_split, seed=seed,
                      channels=channels, image_size=image_size)
  if root is None:
    raise ValueError(f"image_source(kind={kind!r}) needs root=<dataset directory>")
  channels = channels or 3
  if kind == "mini_imagenet":
    return mini_imagenet_split(root, split, channels, image_size or 84)
  if kind == "tiered_imagenet":
    return tiered_imagenet_split(root, split, channels, image_size or 84)
  if kind == "folder":
    return folder_split(root, split, channels, image_size, seed)
  raise ValueError(f"unknown image source kind {kind!r}; choose one of {SOURCE_KINDS}")
