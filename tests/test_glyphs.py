"""The built-in glyph dataset, built small from the two --minimal font packages.

CI runs `bash tools/install_fonts.sh --minimal` first; a missing font is a failure.
"""

import time

import numpy as np
import pytest

from helpers import assert_same_examples, installed_font_files, split_examples
from leo_tf.data import glyph_fonts
from leo_tf.data import glyphs
from leo_tf.data.splits import SPLITS, split_sizes

# One Hei collection with 2 faces (the second, Mono, repeats the first's Han glyphs)
# and one Song face.
MINIMAL_FONTS = ("wqy-microhei.ttc", "gbsn00lp.ttf")
SMALL = dict(num_classes=10, min_examples=2, image_size=32)


@pytest.fixture(scope="module")
def font_files():
  return installed_font_files(MINIMAL_FONTS)


def _all_splits(data_dir, font_files, num_workers=1, **kwargs):
  settings = dict(SMALL, **kwargs)
  return {s: glyphs.load_glyph_split(s, data_dir=str(data_dir), font_files=font_files,
                                     num_workers=num_workers, **settings)
          for s in SPLITS}


@pytest.fixture(scope="module")
def built(tmp_path_factory, font_files):
  return _all_splits(tmp_path_factory.mktemp("tfds"), font_files)


def test_gb2312_has_6763_han_characters():
  chars = glyph_fonts.gb2312_hanzi()
  assert len(chars) == len(set(chars)) == 6763
  assert all(0x4E00 <= ord(c) <= 0x9FFF for c in chars)


def test_split_sizes_follow_mini_imagenet():
  assert split_sizes(100) == {"train": 64, "val": 16, "test": 20}
  assert split_sizes(800) == {"train": 512, "val": 128, "test": 160}
  assert min(split_sizes(3).values()) == 1


def test_features_shapes_and_labels(built):
  for split, image_split in built.items():
    examples = split_examples(image_split)
    assert image_split.image_shape == (32, 32, 1)
    assert len(examples) == image_split.num_examples > 0
    for key, (image, label) in examples.items():
      assert image.shape == (32, 32, 1) and image.dtype == np.uint8
      assert 0 <= label < len(image_split.class_names)
      assert key.startswith(image_split.class_names[label] + "_")
      assert "-" not in key
      # White ink on a black background, centred with a margin.
      assert image.max() == 255 and image[0].max() == 0 and image[:, 0].max() == 0
    assert all("-" not in name for name in image_split.class_names)
    assert image_split.class_names == sorted(image_split.class_names)


def test_classes_split_64_16_20_and_disjoint(built):
  names = {s: set(b.class_names) for s, b in built.items()}
  assert {s: len(n) for s, n in names.items()} == {"train": 6, "val": 2, "test": 2}
  assert not names["train"] & names["val"]
  assert not names["train"] & names["test"]
  assert not names["val"] & names["test"]


def test_identical_faces_are_merged(built):
  # Micro Hei Mono draws the same Han glyphs as Micro Hei: one example, not two.
  for image_split in built.values():
    keys = list(split_examples(image_split))
    assert not [k for k in keys if k.endswith("wqy_microhei_1")]
    assert image_split.num_examples == 2 * len(image_split.class_names)


def test_two_builds_are_identical(built, tmp_path, font_files):
  # The second build also renders in 2 worker processes.
  again = _all_splits(tmp_path, font_files, num_workers=2)
  for split in SPLITS:
    assert again[split].class_names == built[split].class_names
    assert_same_examples(built[split], again[split])


def test_seed_changes_classes(built, tmp_path, font_files):
  other = glyphs.load_glyph_split("train", data_dir=str(tmp_path), font_files=font_files,
                                  seed=1, num_workers=1, **SMALL)
  assert other.class_names != built["train"].class_names


def test_near_duplicates_merged_exact_and_under_threshold():
  rng = np.random.default_rng(0)
  a = (rng.random((16, 16)) > 0.5).astype(np.uint8) * 255
  near = a.copy()
  near[0, :5] = 255 - near[0, :5]  # 5 of 256 pixels flipped: ~2% mean difference
  far = a.copy()
  far[:3] = 255 - far[:3]  # 48 of 256 flipped: ~19%
  assert glyph_fonts.distinct_renderings([a, a.copy(), near, far], 0.03) == [0, 3]
  assert glyph_fonts.distinct_renderings([a, a.copy(), near, far], 0.0) == [0, 2, 3]
  assert glyph_fonts.distinct_renderings([], 0.03) == []


def test_min_examples_filter(tmp_path, font_files, monkeypatch):
  # Every character has exactly 2 distinct renderings in the 3 minimal faces. Fewer
  # candidates keep the exhaustive search short.
  few = glyph_fonts.gb2312_hanzi()[:60]
  monkeypatch.setattr(glyph_fonts, "gb2312_hanzi", lambda: few)
  with pytest.raises(glyph_fonts.MissingFontsError, match="distinct renderings"):
    glyphs.load_glyph_split("train", data_dir=str(tmp_path), font_files=font_files,
                            num_classes=5, min_examples=3, num_workers=1)
  ok = glyphs.load_glyph_split("train", data_dir=str(tmp_path), font_files=font_files,
                               num_classes=5, min_examples=2, num_workers=1)
  assert ok.num_examples == 2 * len(ok.class_names)


def test_missing_glyph_is_not_a_rendering(font_files):
  face = glyph_fonts.list_faces(font_files[1:])[0]  # gbsn00lp: GB2312 only
  renderer = glyph_fonts.FaceRenderer(face, 32)
  assert renderer.render("永") is not None
  assert renderer.render(chr(0x20000)) is None  # CJK extension B
  assert renderer.render(chr(0x10FFFD)) is None  # .notdef
  assert renderer.render(" ") is None  # blank


def test_latin_only_fonts_are_skipped(font_files):
  faces = glyph_fonts.han_faces(font_files=font_files)
  assert [f.key for f in faces] == ["gbsn00lp_0", "wqy_microhei_0", "wqy_microhei_1"]


def test_no_fonts_error_names_packages_and_script(tmp_path):
  empty = tmp_path / "fonts"
  empty.mkdir()
  with pytest.raises(glyph_fonts.MissingFontsError) as err:
    glyphs.load_glyph_split("train", data_dir=str(tmp_path), font_dirs=(str(empty),),
                            num_workers=1)
  message = str(err.value)
  assert "bash tools/install_fonts.sh" in message
  assert "fonts-noto-cjk" in message and "fonts-wqy-microhei" in message


def test_too_few_faces_error(tmp_path, font_files):
  with pytest.raises(glyph_fonts.MissingFontsError, match="Only 1 font faces"):
    glyphs.load_glyph_split("train", data_dir=str(tmp_path), font_files=font_files[1:],
                            num_classes=5, min_examples=20, num_workers=1)


def test_config_names_and_registered_default():
  default = glyphs.glyph_config()
  assert default is glyphs.HanGlyphs.BUILDER_CONFIGS[0]
  assert default.num_classes == 800 and default.image_size == 32
  custom = glyphs.glyph_config(num_classes=50, image_size=28, font_files=("/x.ttf",))
  assert custom.name.startswith("c50_s28_m20_r0_f")
  with pytest.raises(ValueError):
    glyphs.glyph_config(num_classes=2)


def test_rendering_is_fast(font_files):
  renderer = glyph_fonts.FaceRenderer(glyph_fonts.list_faces(font_files[:1])[0], 32)
  chars = glyph_fonts.gb2312_hanzi()[:300]
  start = time.perf_counter()
  for char in chars:
    renderer.render(char)
  per_glyph = (time.perf_counter() - start) / len(chars)
  assert per_glyph < 0.01, f"{per_glyph * 1e3:.2f} ms a glyph"  # ~0.3 ms measured
