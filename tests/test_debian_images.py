"""tools/debian_images.py on a tiny made-up Wesnoth tree: which sprite is whose, which
near-copies are dropped, and that an advancement line never straddles two splits."""

import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tools"))
import debian_images  # noqa: E402  (a tool script, not part of the package)

UNITS = """
[unit_type]
    id=Skeleton
    name= _ "Skeleton"
    image="units/undead/skeleton.png"
    advances_to=Revenant
    [attack]
        name=axe
        image="attacks/axe.png"
    [/attack]
[/unit_type]
[unit_type]
    id=Revenant
    name= _ "Revenant"
    image="units/undead/revenant.png"
    advances_to=null
[/unit_type]
[unit_type]
    id=Skeleton Archer
    name= _ "Skeleton Archer"
    image="units/undead/skeleton-archer.png"
    [female]
        image="units/undead/skeleton-archer-f.png"
    [/female]
[/unit_type]
"""


def sprite(seed, size=24):
  """RGBA picture with a random opaque blob: different seeds differ by far more than 1 %."""
  rng = np.random.default_rng(seed)
  array = np.zeros((size, size, 4), np.uint8)
  array[4:20, 4:20, :3] = rng.integers(0, 256, (16, 16, 3))
  array[4:20, 4:20, 3] = 255
  return array


def make_tree(root):
  units = os.path.join(root, "core", "units")
  images = os.path.join(root, "core", "images", "units", "undead")
  os.makedirs(units)
  os.makedirs(images)
  with open(os.path.join(units, "undead.cfg"), "w") as f:
    f.write(UNITS)
  names = ["skeleton", "skeleton-attack-1", "skeleton-attack-2", "revenant",
           "revenant-defend", "skeleton-archer", "skeleton-archer-bow-1", "skeleton-archer-f"]
  for seed, name in enumerate(names):
    Image.fromarray(sprite(seed)).save(os.path.join(images, name + ".png"))
  near = sprite(1)
  near[5, 5, :3] ^= 1  # one channel value off by one: a near-copy of skeleton-attack-1
  Image.fromarray(near).save(os.path.join(images, "skeleton-attack-3.png"))
  Image.fromarray(sprite(0)).save(os.path.join(images, "skeleton-idle-1.png"))  # exact copy
  return images


def test_units_are_read_with_female_images_and_attack_images_ignored(tmp_path):
  make_tree(str(tmp_path))
  records = debian_images.find_units(str(tmp_path))
  got = sorted((r["id"], os.path.basename(r["image"]), r["advances"]) for r in records)
  assert got == [("Revenant", "revenant.png", "null"),
                 ("Skeleton", "skeleton.png", "Revenant"),
                 ("Skeleton Archer", "skeleton-archer-f.png", ""),
                 ("Skeleton Archer", "skeleton-archer.png", "")]


def test_a_sprite_belongs_to_the_longest_matching_base_stem(tmp_path):
  images = make_tree(str(tmp_path))
  bases = {os.path.join(images, n + ".png") for n in ("skeleton", "skeleton-archer")}
  frames = debian_images.assign_frames(bases)
  names = {os.path.basename(b): sorted(os.path.basename(p) for p in v)
           for b, v in frames.items()}
  assert names == {
      "skeleton.png": ["skeleton-attack-1.png", "skeleton-attack-2.png",
                       "skeleton-attack-3.png", "skeleton-idle-1.png", "skeleton.png"],
      "skeleton-archer.png": ["skeleton-archer-bow-1.png", "skeleton-archer-f.png",
                              "skeleton-archer.png"]}


def test_near_and_exact_copies_are_dropped(tmp_path):
  images = make_tree(str(tmp_path))
  paths = [os.path.join(images, n + ".png") for n in
           ("skeleton-attack-1", "skeleton-attack-3", "skeleton", "skeleton-idle-1")]
  kept = debian_images.distinct_sprites(paths, 0.01, set())
  assert [os.path.basename(p) for p, _ in kept] == ["skeleton-attack-1.png", "skeleton.png"]
  # Composited on the grey background: a transparent pixel is (128, 128, 128).
  assert kept[0][1][0, 0].tolist() == [128, 128, 128]


def test_build_keeps_lines_together_and_writes_the_counts(tmp_path):
  make_tree(str(tmp_path / "data"))
  out = str(tmp_path / "out")
  debian_images.build(str(tmp_path / "data"), out, threshold=0.01, min_images=2,
                      max_images=80, seed=0)
  with open(os.path.join(out, "metadata.json")) as f:
    metadata = json.load(f)
  split = metadata["classes"]
  assert sorted(split) == ["Revenant", "Skeleton", "Skeleton_Archer"]
  assert split["Skeleton"] == split["Revenant"]  # one advancement line, one split
  counts = {name: len(os.listdir(os.path.join(out, split[name], name))) for name in split}
  # Skeleton: 5 files less a near and an exact copy; the archer: its own 2 and the female.
  assert counts == {"Revenant": 2, "Skeleton": 3, "Skeleton_Archer": 3}
  assert metadata["images_per_class"]["max"] == 3
