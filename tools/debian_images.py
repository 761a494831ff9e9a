"""Builds a few-shot image-folder dataset from Battle for Wesnoth's unit sprites.

A class is one unit type (or one visual variation of it, e.g. the Walking Corpse of a
bat vs of a drake); its examples are the distinct sprites the game draws it with: the
standing image, the female version, and the frames of its attack, defend, idle, leading
and dying animations. Frames of one animation are near-copies of each other, so a
frame is kept only if it differs from every already kept sprite of its class by more
than ``--dedupe`` (mean absolute pixel difference, fraction of 255).

Units are read from the game's WML unit files ([unit_type] with its image=,
advances_to=, [female] and [variation] blocks); a file ``<dir>/<stem>-*.png`` belongs
to the unit whose base image ``<dir>/<stem>.png`` has the longest matching stem. Units
of one advancement line (Skeleton -> Revenant -> Draug), units that share a name or a
base image, and units whose base images are look-alikes (within ``LOOKALIKE``: a
campaign's reskin of a core unit, e.g. the masked dwarves of The Hammer of Thursagan)
form one *line*; lines are dealt to train / val / test in a seeded order towards
64 / 16 / 20 % of the classes, so no test class is an advancement, variation or reskin
of a training class.

Writes ``<out>/{train,val,test}/<class>/<sprite>.png`` (RGB, the sprite's alpha
composited on mid-grey, the game's own size, mostly 72 x 72) and ``<out>/metadata.json``.
Deterministic: files, units and lines are visited in sorted order, the split is seeded.

Usage: python tools/debian_images.py --wesnoth /usr/share/games/wesnoth/1.16/data --out DIR
"""

import argparse
import collections
import json
import os
import random
import re
import sys

import numpy as np
from PIL import Image

BACKGROUND = (128, 128, 128)
LOOKALIKE = 0.0125  # base images this close (mean absolute difference / 255): one line
SPLIT_FRACTIONS = (("train", 0.64), ("val", 0.16), ("test", 0.20))
_TAG = re.compile(r"^\s*\[(/?)([a-z_]+)\]")
_KEY = re.compile(r'^\s*([a-z_]+)\s*=\s*_?\s*"?([^"#]*)"?')
_UNIT_BLOCKS = ("unit_type", "female", "male", "variation")


def parse_units(cfg_path):
  """[(id, name, image, advances_to, variation)] of every unit_type, female and variation."""
  units, stack, blocks = [], [], []
  with open(cfg_path, encoding="utf-8", errors="replace") as f:
    for line in f:
      tag = _TAG.match(line)
      if tag:
        closing, name = tag.groups()
        if not closing:
          stack.append(name)
          blocks.append({} if name in _UNIT_BLOCKS else None)
        elif stack and stack[-1] == name:
          stack.pop()
          block = blocks.pop()
          if block is not None and name in _UNIT_BLOCKS:
            units.append((name, block, [b for b in blocks if b is not None]))
        continue
      key = _KEY.match(line)
      if key and blocks and blocks[-1] is not None and key.group(1) not in blocks[-1]:
        blocks[-1][key.group(1)] = key.group(2).strip()
  out = []
  for kind, block, parents in units:
    unit = parents[0] if parents else block
    if "id" not in unit or "image" not in block:
      continue
    variation = block.get("variation_name", "") if kind == "variation" else ""
    out.append((unit["id"], unit.get("name", unit["id"]), block["image"],
                unit.get("advances_to", ""), variation))
  return out


def find_units(data_dir):
  """Unit records with their base image resolved to a file (campaign images first)."""
  records = []
  for dirpath, dirnames, filenames in sorted(os.walk(data_dir)):
    dirnames.sort()
    for name in sorted(filenames):
      if not name.endswith(".cfg") or "units" not in dirpath.split(os.sep):
        continue
      campaign_images = os.path.join(dirpath.split(os.sep + "units")[0], "images")
      for unit_id, name_, image, advances, variation in parse_units(os.path.join(dirpath, name)):
        image = image.split("~")[0].split(":")[0]
        for base in (campaign_images, os.path.join(data_dir, "core", "images")):
          path = os.path.join(base, image)
          if image.startswith("units/") and image.endswith(".png") and os.path.isfile(path):
            records.append(dict(id=unit_id, name=name_, image=os.path.realpath(path),
                                advances=advances, variation=variation))
            break
  return records


def assign_frames(base_images):
  """{base image: [its sprite files]}: each png goes to the longest matching base stem."""
  by_dir = collections.defaultdict(set)
  for path in base_images:
    by_dir[os.path.dirname(path)].add(os.path.basename(path)[:-4])
  frames = collections.defaultdict(list)
  for directory, stems in sorted(by_dir.items()):
    for name in sorted(os.listdir(directory)):
      if not name.endswith(".png"):
        continue
      stem = name[:-4]
      owners = [s for s in stems if stem == s or stem.startswith(s + "-")]
      if owners:
        frames[os.path.join(directory, max(owners, key=len) + ".png")].append(
            os.path.join(directory, name))
  return frames


def load_sprite(path):
  """RGB uint8 array: the sprite's alpha composited on the grey background."""
  with Image.open(path) as image:
    rgba = image.convert("RGBA")
  canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
  return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))


def thumbnail(array):
  """36 x 36 floats in [0, 1]: what near-copies and look-alikes are measured on."""
  return np.asarray(Image.fromarray(array).resize((36, 36), Image.Resampling.BOX),
                    np.float32) / 255.0


def distinct_sprites(paths, threshold, seen):
  """The sprites of one class that are not near-copies of an earlier one (in order).

  ``seen`` holds the exact bytes of every sprite kept so far in any class: a picture
  shared by two units stays in the first only.
  """
  kept, thumbs = [], []
  for path in paths:
    array = load_sprite(path)
    digest = (array.shape, array.tobytes())
    if digest in seen:
      continue
    thumb = thumbnail(array)
    if any(np.abs(thumb - t).mean() <= threshold for t in thumbs):
      continue
    seen.add(digest)
    kept.append((path, array))
    thumbs.append(thumb)
  return kept


def class_name(unit_id, variation):
  name = unit_id + ("_" + variation if variation else "")
  return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")


def lines_of(records):
  """Union-find over unit ids: advancement, shared name, same or look-alike base image."""
  parent = {}

  def find(x):
    parent.setdefault(x, x)
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  def union(a, b):
    parent[find(a)] = find(b)

  for r in records:
    find(r["id"])
    for other in filter(None, (a.strip() for a in r["advances"].split(","))):
      if other != "null":
        union(r["id"], other)
    union(r["id"], "name:" + r["name"])
    union(r["id"], "image:" + r["image"])
  images = sorted({r["image"] for r in records})
  thumbs = np.stack([thumbnail(np.asarray(Image.fromarray(load_sprite(p)).resize((72, 72))))
                     for p in images]).reshape(len(images), -1)
  for i, path in enumerate(images):
    close = np.abs(thumbs[i + 1:] - thumbs[i]).mean(axis=1) <= LOOKALIKE
    for j in np.flatnonzero(close):
      union("image:" + path, "image:" + images[i + 1 + j])
  return find


def build(data_dir, out, threshold, min_images, max_images, seed):
  records = find_units(data_dir)
  frames = assign_frames({r["image"] for r in records})
  line_of = lines_of(records)
  classes = {}  # class name -> (line, [base images])
  for r in records:
    name = class_name(r["id"], r["variation"])
    entry = classes.setdefault(name, (line_of(r["id"]), []))
    if r["image"] not in entry[1]:
      entry[1].append(r["image"])
  seen, claimed, sprites = set(), set(), {}
  for name in sorted(classes):
    paths = [p for base in classes[name][1] for p in frames[base] if p not in claimed]
    claimed.update(paths)
    kept = distinct_sprites(paths, threshold, seen)
    if len(kept) > max_images:
      kept = sorted(random.Random(f"{seed}:{name}").sample(kept, max_images))
    if len(kept) >= min_images:
      sprites[name] = kept
  by_line = collections.defaultdict(list)
  for name in sorted(sprites):
    by_line[classes[name][0]].append(name)
  lines = sorted(by_line, key=lambda line: by_line[line][0])
  random.Random(seed).shuffle(lines)
  split_of, counts = {}, collections.Counter()
  for line in lines:  # deal each line to the split furthest below its share
    split = min(SPLIT_FRACTIONS, key=lambda s: counts[s[0]] / len(sprites) - s[1])[0]
    for name in by_line[line]:
      split_of[name] = split
    counts[split] += len(by_line[line])
  write(out, sprites, split_of, data_dir)


def write(out, sprites, split_of, data_dir):
  summary = {s: {"classes": 0, "images": 0} for s, _ in SPLIT_FRACTIONS}
  sizes = collections.Counter()
  for name, kept in sorted(sprites.items()):
    folder = os.path.join(out, split_of[name], name)
    os.makedirs(folder, exist_ok=True)
    for path, array in kept:
      Image.fromarray(array).save(os.path.join(folder, os.path.basename(path)), optimize=False)
      sizes[f"{array.shape[1]}x{array.shape[0]}"] += 1
    summary[split_of[name]]["classes"] += 1
    summary[split_of[name]]["images"] += len(kept)
  per_class = np.array([len(k) for k in sprites.values()])
  metadata = {
      "source": os.path.realpath(data_dir), "splits": summary,
      "images_per_class": {"min": int(per_class.min()), "median": float(np.median(per_class)),
                           "mean": round(float(per_class.mean()), 1),
                           "max": int(per_class.max()),
                           "quartiles": [float(q) for q in np.percentile(per_class, [25, 75])]},
      "image_sizes": dict(sizes.most_common()),
      "classes": {name: split_of[name] for name in sorted(sprites)}}
  with open(os.path.join(out, "metadata.json"), "w") as f:
    json.dump(metadata, f, indent=1, sort_keys=True)
  print(json.dumps({k: metadata[k] for k in ("splits", "images_per_class")}, indent=1))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--wesnoth", default="/usr/share/games/wesnoth/1.16/data")
  parser.add_argument("--out", required=True)
  parser.add_argument("--dedupe", type=float, default=0.01,
                      help="near-copy threshold (mean absolute difference / 255)")
  parser.add_argument("--min_images", type=int, default=7)
  parser.add_argument("--max_images", type=int, default=80)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if os.path.exists(args.out) and os.listdir(args.out):
    sys.exit(f"error: --out {args.out} is not empty; remove it or give another directory")
  build(args.wesnoth, args.out, args.dedupe, args.min_images, args.max_images, args.seed)


if __name__ == "__main__":
  main()
