"""Images -> pre-trained backbone -> embedding files, stage by stage.

Each stage is skipped when its output exists: the image dataset is cached by its
builder (tfds), pre-training is skipped once ``backbone.keras`` is written (and resumes
from its latest checkpoint if it was interrupted), extraction skips splits whose file
exists. A second run therefore costs seconds. The first run records which classes each
split holds in ``<root>/<dataset>/classes.json``.
"""

import contextlib
import functools
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence

import gin

from leo_tf.backbone import embed, pretrain as pretrain_lib
from leo_tf.data import embeddings as emb_lib
from leo_tf.data import images
from leo_tf.data import splits as splits_lib
from leo_tf.runtime import files, outputs

# ``image_source(split)`` returns a ``leo_tf.data.images.ImageSplit``; the default is
# the gin-configurable ``image_source`` whose default kind is the built-in glyphs.
ImageSource = Callable[[str], "images.ImageSplit"]
CLASSES_FILE = "classes.json"


def default_model_dir(root: str, dataset: str) -> str:
  """Where :func:`build_embeddings` pre-trains the backbone of ``<root>/<dataset>``
  unless told otherwise (end-to-end LEO starts from it)."""
  return os.path.join(root, dataset, "backbone")


@contextlib.contextmanager
def _stage(name: str, log: Callable[[str], None]):
  log(f"[stage] {name} ...")
  tick = time.time()
  yield
  log(f"[stage] {name} done in {time.time() - tick:.1f}s")


def build_embeddings(root: str, dataset: str, crop: str = "center",
                     image_source: ImageSource = images.image_source,
                     model_dir: Optional[str] = None,
                     splits: Sequence[str] = splits_lib.SPLITS, pretrain_split: str = "train",
                     log: Callable[[str], None] = print) -> Dict[str, str]:
  """Makes sure ``<root>/<dataset>/<crop>/<split>_embeddings.pkl`` exist for ``splits``.

  ``image_source(split)`` returns an ImageSplit; the backbone is pre-trained
  on ``pretrain_split`` (under ``model_dir``, by default ``<root>/<dataset>/backbone``)
  with the gin-bound pre-training settings. Returns split -> embeddings path.
  """
  model_dir = model_dir or default_model_dir(root, dataset)
  paths = {s: emb_lib.embeddings_path(root, dataset, crop, s) for s in splits}
  if all(os.path.exists(p) for p in paths.values()):
    log(f"[stage] embeddings exist under {os.path.join(root, dataset, crop)}: all stages skipped")
    return paths
  started = time.time()
  source = functools.cache(image_source)  # the pre-training split is embedded too

  with _stage(f"images: {dataset} {pretrain_split} split", log):
    train = source(pretrain_split)
    log(f"{train.num_examples} examples of {len(train.class_names)} classes, "
        f"image shape {train.image_shape}")
    _record_classes(os.path.join(root, dataset, CLASSES_FILE), source, splits, log)

  backbone_path = os.path.join(model_dir, pretrain_lib.BACKBONE_FILE)
  if os.path.exists(backbone_path):
    log(f"[stage] pre-training skipped: {backbone_path} exists")
  else:
    with _stage(f"pre-training into {model_dir}", log):
      pretrain_lib.pretrain(train, model_dir, log=log)

  with _stage(f"embedding extraction into {os.path.join(root, dataset, crop)}", log):
    embed.embed_splits(model_dir, {s: functools.partial(source, s) for s in splits}, root,
                       dataset, crop, log=log)
  log(f"[stage] all stages done in {time.time() - started:.1f}s")
  return paths


def _record_classes(path: str, source: ImageSource, splits: Sequence[str],
                    log: Callable[[str], None]) -> None:
  """Writes {split: [class names]} to ``path`` unless it exists (the first build)."""
  if not os.path.exists(path):
    files.atomic_write(path, json.dumps({s: source(s).class_names for s in splits}, indent=1))
  log(f"the classes of each split: {path}")


def _build_image_embeddings(root: str, dataset: str, crop: str = "center",
                            image_source: ImageSource = images.image_source,
                            model_dir: Optional[str] = None) -> Dict[str, str]:
  """What an ``EmbeddingSource.builder`` runs: embeddings of the gin-bound
  ``image_source`` (the built-in glyphs or typefaces, an image folder, ...) under
  ``root``, built only when missing. The built-in images are cached under
  ``image_source.root`` (tfds data_dir; None = ~/tensorflow_datasets)."""
  return build_embeddings(root, dataset, crop, image_source, model_dir)


build_image_embeddings = gin.configurable("build_image_embeddings")(_build_image_embeddings)
# The same builder under the name the glyph and typeface files (and their runs) bind.
build_glyph_embeddings = gin.configurable("build_glyph_embeddings")(_build_image_embeddings)


@gin.configurable(denylist=["log"])
def run_pretraining(model_dir: str = gin.REQUIRED,
                    image_source: ImageSource = images.image_source,
                    split: str = "train",
                    log: Callable[[str], None] = print) -> pretrain_lib.PretrainResult:
  """What ``leo-pretrain`` runs: pre-train on one split of ``image_source``."""
  outputs.writable_directory(model_dir, "run_pretraining.model_dir")  # before any work
  with _stage(f"images: {split} split", log):
    source = image_source(split)
  with _stage(f"pre-training into {model_dir}", log):
    return pretrain_lib.pretrain(source, model_dir, log=log)


@gin.configurable(denylist=["log"])
def run_extraction(model_dir: str = gin.REQUIRED, root: str = gin.REQUIRED,
                   dataset: str = gin.REQUIRED, crop: str = "center",
                   image_source: ImageSource = images.image_source,
                   splits: Sequence[str] = splits_lib.SPLITS, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> Dict[str, str]:
  """What ``leo-embed`` runs: the backbone in ``model_dir`` over every split."""
  outputs.writable_directory(root, "run_extraction.root")  # before any work
  with _stage(f"embedding extraction into {os.path.join(root, dataset, crop)}", log):
    return embed.embed_splits(model_dir, {s: functools.partial(image_source, s) for s in splits},
                              root, dataset, crop, overwrite, log=log)
