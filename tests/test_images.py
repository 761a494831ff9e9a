"""Image sources: tiny miniImageNet/tieredImageNet/folder trees made here, mocked tfds."""

import os

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from leo_tf.data import glyph_fonts
from leo_tf.data import images
from leo_tf.data.splits import SPLITS

COLOURS = {"n01": (255, 0, 0), "n02": (0, 255, 0), "n03": (0, 0, 255),
           "n04-x": (255, 255, 0), "n05": (0, 255, 255)}


def _write_image(path, colour, size=(12, 10), mode="RGB"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.new("RGB", size, colour)
  if mode != "RGB":
    image = image.convert(mode)
  image.save(path)


def _class_tree(root, classes, per_class=3):
  """<root>/<class>/<class>_<i>.{png,jpg}"""
  for name in classes:
    for i in range(per_class):
      ext = "png" if i % 2 == 0 else "jpg"
      _write_image(os.path.join(root, name, f"{name}_{i}.{ext}"), COLOURS[name])


def _examples(image_split):
  return list(image_split.dataset.as_numpy_iterator())


def _check_form(image_split, shape=None):
  examples = _examples(image_split)
  assert len(examples) == image_split.num_examples
  assert len({ex["key"] for ex in examples}) == len(examples)
  assert all("-" not in name for name in image_split.class_names)
  for ex in examples:
    assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32
    assert 0 <= ex["label"] < image_split.num_classes
    if shape:
      assert ex["image"].shape == shape
  spec = image_split.dataset.element_spec
  assert spec["image"].dtype == tf.uint8 and spec["key"].dtype == tf.string
  return examples


@pytest.fixture
def mini_root(tmp_path):
  root = tmp_path / "mini"
  rows = {"train": ["n01", "n02"], "val": ["n03"], "test": ["n05"]}
  for split, classes in rows.items():
    lines = ["filename,label"]
    for name in classes:
      for i in range(2):
        filename = f"{name}0000{i}.jpg"
        _write_image(str(root / "images" / filename), COLOURS[name])
        lines.append(f"{filename},{name}")
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
  return str(root)


def test_mini_imagenet(mini_root):
  split = images.mini_imagenet_split(mini_root, "train")
  assert split.class_names == ["n01", "n02"] and split.image_shape == (84, 84, 3)
  examples = _check_form(split, (84, 84, 3))
  by_key = {ex["key"].decode(): ex for ex in examples}
  assert set(by_key) == {"images/n0100000.jpg", "images/n0100001.jpg",
                         "images/n0200000.jpg", "images/n0200001.jpg"}
  red = by_key["images/n0100000.jpg"]
  assert red["label"] == 0 and red["image"][..., 0].mean() > 200
  assert images.mini_imagenet_split(mini_root, "val").class_names == ["n03"]


def test_mini_imagenet_missing_csv_is_explained(tmp_path):
  with pytest.raises(images.ImageSourceError, match="train.csv"):
    images.mini_imagenet_split(str(tmp_path), "train")


def test_tiered_imagenet_split_directories(tmp_path):
  for split, classes in {"train": ["n01", "n02"], "val": ["n03"], "test": ["n05"]}.items():
    _class_tree(str(tmp_path / split), classes)
  split = images.tiered_imagenet_split(str(tmp_path), "train", image_size=20)
  assert split.class_names == ["n01", "n02"] and split.num_examples == 6
  examples = _check_form(split, (20, 20, 3))
  assert examples[0]["key"].decode() == os.path.join("train", "n01", "n01_0.png")
  assert images.tiered_imagenet_split(str(tmp_path), "test").class_names == ["n05"]


def test_folder_without_splits_splits_classes_deterministically(tmp_path):
  _class_tree(str(tmp_path), list(COLOURS))
  splits = {s: images.folder_split(str(tmp_path), s, seed=3) for s in SPLITS}
  names = [set(splits[s].class_names) for s in SPLITS]
  assert [len(n) for n in names] == [3, 1, 1]
  assert set.union(*names) == {"n01", "n02", "n03", "n04_x", "n05"}  # '-' sanitised
  again = images.folder_split(str(tmp_path), "train", seed=3)
  assert again.class_names == splits["train"].class_names
  # Unresized files of different sizes: no fixed shape.
  assert splits["train"].image_shape is None
  _check_form(splits["train"], (10, 12, 3))


def test_grayscale_and_channels(tmp_path):
  _write_image(str(tmp_path / "train" / "a" / "0.png"), (90, 90, 90), mode="L")
  _write_image(str(tmp_path / "train" / "a" / "1.png"), (90, 90, 90), mode="RGBA")
  rgb = images.folder_split(str(tmp_path), "train", channels=3, image_size=(8, 6))
  assert rgb.image_shape == (8, 6, 3)
  _check_form(rgb, (8, 6, 3))
  gray = images.folder_split(str(tmp_path), "train", channels=1)
  _check_form(gray, (10, 12, 1))


def test_unreadable_image_in_a_folder_is_named_once_and_skipped(tmp_path, caplog):
  _class_tree(str(tmp_path / "train"), ["n01"])
  broken = tmp_path / "train" / "n01" / "n01_9_broken.jpg"
  broken.write_bytes(b"not a jpeg at all")
  split = images.folder_split(str(tmp_path), "train")
  with caplog.at_level("WARNING"):
    assert len(_examples(split)) == 3 and len(_examples(split)) == 3   # two passes
  assert [r.getMessage() for r in caplog.records] == [
      f"skipped: cannot decode image file {broken}: cannot identify image file "
      f"'{broken}'"]


def test_unreadable_image_of_a_benchmark_stops_iteration(tmp_path):
  _class_tree(str(tmp_path / "train"), ["n01"])
  (tmp_path / "train" / "n01" / "n01_9_broken.jpg").write_bytes(b"not a jpeg at all")
  split = images.tiered_imagenet_split(str(tmp_path), "train")
  with pytest.raises(tf.errors.OpError, match="n01_9_broken.jpg"):
    _examples(split)
  with pytest.raises(images.ImageDecodeError, match="n01_9_broken.jpg"):
    images.read_image(str(tmp_path / "train" / "n01" / "n01_9_broken.jpg"))


def test_sanitize_class_names_keeps_them_unique():
  assert images.sanitize_class_names(["a-b", "a_b", "T-shirt/top", "x y"]) == [
      "a_b", "a_b_2", "T_shirt_top", "x_y"]


def test_tfds_by_name_offline(tmp_path):
  with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
    split = images.tfds_split("fashion_mnist", "test", data_dir=str(tmp_path))
    assert split.class_names[0] == "T_shirt_top" and len(split.class_names) == 10
    assert split.image_shape == (28, 28, 1)
    examples = _check_form(split, (28, 28, 1))
    assert examples[0]["key"] == b"fashion_mnist:test:0"


def test_tfds_class_split(tmp_path):
  with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path)):
    splits = {s: images.tfds_split("mnist", s, data_dir=str(tmp_path), class_split=True,
                                   channels=3, image_size=16) for s in SPLITS}
    names = [set(splits[s].class_names) for s in SPLITS]
    assert [len(n) for n in names] == [6, 2, 2]
    assert set.union(*names) == {str(d) for d in range(10)}
    for s in SPLITS:
      assert splits[s].image_shape == (16, 16, 3)
      _check_form(splits[s], (16, 16, 3))
    assert sum(splits[s].num_examples for s in SPLITS) == 40


def test_image_source_dispatch_through_gin(tmp_path):
  _class_tree(str(tmp_path), list(COLOURS))
  gin.clear_config()
  try:
    gin.parse_config(f"""
        image_source.kind = 'folder'
        image_source.root = '{tmp_path}'
        image_source.image_size = 8
    """)
    split = images.image_source("val")
    assert split.image_shape == (8, 8, 3) and split.num_classes == 1
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match="unknown image source"):
    images.image_source("train", kind="imagenet", root=str(tmp_path))
  with pytest.raises(ValueError, match="needs root"):
    images.image_source("train", kind="mini_imagenet")


def test_image_source_glyphs_through_gin(tmp_path):
  found = {os.path.basename(p): p for p in glyph_fonts.find_font_files()}
  font_files = [found["wqy-microhei.ttc"], found["gbsn00lp.ttf"]]
  gin.clear_config()
  try:
    gin.bind_parameter("load_glyph_split.num_classes", 5)
    gin.bind_parameter("load_glyph_split.min_examples", 2)
    gin.bind_parameter("load_glyph_split.font_files", font_files)
    gin.bind_parameter("load_glyph_split.num_workers", 1)
    split = images.image_source("test", kind="glyphs", root=str(tmp_path), image_size=24)
    rgb = images.image_source("test", kind="glyphs", root=str(tmp_path), image_size=24,
                              channels=3)
  finally:
    gin.clear_config()
  assert split.image_shape == (24, 24, 1) and split.num_classes == 1
  _check_form(split, (24, 24, 1))
  assert rgb.image_shape == (24, 24, 3)
  _check_form(rgb, (24, 24, 3))
