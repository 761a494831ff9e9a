"""End-to-end LEO: the backbone meta-learned jointly with LEO (``EndToEndConfig``).

Episodes are images. The sampler is the frozen run's own: it samples a stand-in of the
embedding set whose one feature is the row number (``row_numbers``), so it picks the
same examples from the same seeds; the step gathers those rows' images, preprocesses
them as leo-embed does, runs the backbone (started from the pre-trained one) and
L2-normalises like the embedding files, all inside the one outer ``tf.function``. LEO
then runs on these features with ``LEO.input_gradients`` set, so the query loss's
gradient reaches the backbone through both inner loops (second order, like LEO's own
parameters). The backbone is not adapted in the inner loop; it has its own optimizer.

Batch norm: 'frozen' runs the backbone's BN layers in inference mode, on their
pre-trained moving statistics (gamma and beta still learn): an episode's features do
not depend on the other images of the meta-batch, and at step 0 they are exactly the
frozen embeddings. 'train' normalises by the replica's batch and updates the moving
statistics (for the measurement in docs/design.md).

At test time the backbone is fixed (BN on its statistics, no dropout, no augmentation),
so running it inside LEO equals reading embeddings extracted with it: after training
the run directory gets the backbone (``RunDir.backbone``) and its embeddings of every
split (``RunDir.embeddings``, the EmbeddingSource layout), and test evaluation,
leo-eval, comparisons and export read those (``EndToEndConfig.source_of``).
"""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from leo_tf import checkpoints
from leo_tf.backbone import embed, inputs, optim, pipeline, precision as precision_lib
from leo_tf.backbone.pretrain import BACKBONE_FILE
from leo_tf.config_checks import (ConfigError, check_types, require_at_least,
                                  require_one_of, require_positive)
from leo_tf.data import images as images_lib
from leo_tf.data.embeddings import EmbeddingDataError, EmbeddingSet, make_key
from leo_tf.data.source import EmbeddingSource
from leo_tf.data.splits import SPLITS
from leo_tf.runtime import files, paths
from leo_tf.runtime.rundir import RunDir

BATCH_NORM = ("frozen", "train")
# The checkpoint entry of the backbone's weights (BN statistics included).
BACKBONE_VARIABLES = "backbone_variables"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EndToEndConfig:
  """Meta-learn the backbone with LEO. ``backbone``: a leo-pretrain model directory or
  a .keras file; None is the one the EmbeddingSource's embeddings were built with
  (``<root>/<folder>/backbone``, built on demand with them). ``image_source``: the images
  those embeddings were extracted from, row for row (checked). The backbone's own
  optimizer: ``optimizer`` ('adamw' or 'sgd' with Nesterov ``momentum``),
  ``learning_rate``, decoupled ``weight_decay`` (not on BN scales and offsets).
  ``precision``: the backbone's Keras policy (None: as saved; 'mixed_bfloat16')."""
  enabled: bool = False
  backbone: Optional[str] = None
  image_source: Callable[[str], object] = images_lib.image_source
  optimizer: str = "adamw"
  learning_rate: float = 1e-4
  weight_decay: float = 0.0
  momentum: float = 0.9
  batch_norm: str = "frozen"
  precision: Optional[str] = None

  def __post_init__(self):
    check_types(self)
    require_one_of(self, "optimizer", ("adamw", "sgd"))
    require_one_of(self, "batch_norm", BATCH_NORM)
    require_positive(self, "learning_rate")
    require_at_least(self, 0.0, "weight_decay", "momentum")
    if self.precision is not None:
      require_one_of(self, "precision", precision_lib.POLICIES)
      if self.precision == "mixed_float16":
        raise ConfigError("EndToEndConfig.precision = 'mixed_float16' would need loss "
                          "scaling of the whole meta-objective; use 'mixed_bfloat16' or "
                          "'float32'")
    if self.backbone is not None:
      object.__setattr__(self, "backbone", paths.resolve(self.backbone))

  def backbone_file(self, source: EmbeddingSource) -> str:
    """The pre-trained backbone to start from, as a .keras path."""
    path = self.backbone or pipeline.default_model_dir(source.root, source.folder)
    return path if path.endswith(".keras") else os.path.join(path, BACKBONE_FILE)

  def source_of(self, source: EmbeddingSource, run: RunDir) -> EmbeddingSource:
    """The embeddings a run is tested on: ``source``'s, or an end-to-end run's own."""
    if not self.enabled:
      return source
    return dataclasses.replace(source, root=run.embeddings, builder=None)


def backbone_variables(backbone: keras.Model) -> Dict[str, tf.Variable]:
  """Every weight of a functional backbone by its path (layer/weight: unique), for
  tf.train checkpoints (``checkpoints.named_variables`` names a LEO model's)."""
  return {v.path.replace("/", "."): v for v in backbone.weights}


def check_end_to_end(path: str, end_to_end: bool) -> None:
  """CheckpointMismatchError unless checkpoint ``path`` holds a backbone exactly when the
  run resuming from it is end-to-end (LEO trained on one kind of features must not go on
  on the other)."""
  stored = any(k.startswith(BACKBONE_VARIABLES + "/")
               for k in tf.train.load_checkpoint(path).get_variable_to_shape_map())
  if stored != end_to_end:
    raise checkpoints.CheckpointMismatchError(
        f"{path} was written by {'an end-to-end' if stored else 'a frozen-embedding'} run, "
        f"and EndToEndConfig.enabled is {end_to_end}: bind it as the run was, or choose "
        "another output_dir")


def restore_backbone(backbone: keras.Model, checkpoint: str) -> keras.Model:
  """``backbone`` with the weights an end-to-end checkpoint holds for it, every one."""
  tf.train.Checkpoint(**{BACKBONE_VARIABLES: backbone_variables(backbone)}).restore(
      checkpoint).assert_existing_objects_matched().expect_partial()
  return backbone


def write_embeddings(backbone: keras.Model, image_source: Callable[[str], object],
                     target: EmbeddingSource) -> None:
  """``backbone``'s embeddings of every split's images, where ``target`` reads them."""
  for split in SPLITS:
    embed.write_split(backbone, image_source(split), target.root, target.folder, target.crop,
                      split)


def row_numbers(data: EmbeddingSet) -> EmbeddingSet:
  """``data`` with its row numbers [n, 1] as the embeddings: an EpisodeSampler of it
  samples the examples a sampler of ``data`` samples, as row numbers (exact in float32
  below 2**24 rows)."""
  if len(data.keys) >= 2**24:
    raise EmbeddingDataError(f"{data.source}: {len(data.keys)} rows, end-to-end LEO "
                             "numbers at most 2**24")
  return dataclasses.replace(data, embeddings=np.arange(len(data.keys), dtype=np.float32)[:, None])


def load_images(image_source: Callable[[str], object], split: str,
                data: EmbeddingSet) -> np.ndarray:
  """The images [n, H, W, C] uint8 of ``image_source(split)``, which must be the rows of
  ``data`` in order (the keys leo-embed wrote for them)."""
  source = image_source(split)
  images, keys = [], []
  for batch in source.dataset.batch(4096).as_numpy_iterator():
    for label, key in zip(batch["label"], batch["key"]):
      keys.append(make_key(len(keys), source.class_names[label], key.decode("utf-8") or None))
    images.append(batch["image"])
  if keys != data.keys.tolist():
    row = next((i for i, (a, b) in enumerate(zip(keys, data.keys)) if a != b),
               min(len(keys), len(data.keys)))
    raise EmbeddingDataError(
        f"{data.source}: its rows are not the images of image_source('{split}') (first "
        f"difference at row {row} of {len(data.keys)}); end-to-end LEO needs the images "
        "the embeddings were extracted from: bind EndToEndConfig.image_source to them")
  return np.concatenate(images)


class EndToEnd:
  """The backbone inside meta-training: its features of a batch of sampled rows, its
  variables and optimizer (checkpointed with LEO's), its validation features, and what
  a finished run keeps of it."""

  def __init__(self, config: EndToEndConfig, backbone: keras.Model, train_images: np.ndarray,
               l2_normalize: bool, strategy: Optional[tf.distribute.Strategy] = None):
    """``backbone`` is copied under ``strategy``'s scope (in ``config.precision``);
    ``train_images`` [n, H, W, C] are the meta-training rows' images."""
    self.config = config
    self.l2_normalize = l2_normalize
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
      self.backbone = precision_lib.with_policy(
          backbone, config.precision or backbone.dtype_policy.name)
      self.optimizer = optim.make_optimizer(config.optimizer, config.learning_rate,
                                            config.momentum, config.weight_decay)
      self.optimizer.build(self.variables)
    self._images = tf.constant(train_images)

  @classmethod
  def create(cls, config: EndToEndConfig, source: EmbeddingSource,
             splits: Dict[str, EmbeddingSet], train_splits: Sequence[str],
             strategy: tf.distribute.Strategy, log: Callable[[str], None] = print):
    """From the pre-trained backbone and the images of ``train_splits`` (the meta-training
    rows: their embedding sets concatenated in this order)."""
    path = config.backbone_file(source)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"EndToEndConfig.backbone: no pre-trained backbone at {path}; "
                              "bind it to a leo-pretrain model directory or .keras file")
    backbone = keras.saving.load_model(path, compile=False)
    train_images = np.concatenate([load_images(config.image_source, s, splits[s])
                                   for s in train_splits])
    log(f"[end-to-end] backbone {path} ({backbone.count_params():,} weights), "
        f"{train_images.shape[0]} meta-training images {train_images.shape[1:]}, "
        f"batch norm {config.batch_norm}, {config.optimizer} lr {config.learning_rate}")
    return cls(config, backbone, train_images, source.l2_normalize, strategy)

  @property
  def variables(self) -> List[tf.Variable]:
    return self.backbone.trainable_variables

  def checkpoint_entries(self) -> Dict[str, object]:
    return {BACKBONE_VARIABLES: backbone_variables(self.backbone),
            "backbone_optimizer": self.optimizer}

  def embed(self, images: tf.Tensor) -> tf.Tensor:
    """Features [M, d] float32 of uint8 images [M, H, W, C], as leo-embed's files hold
    them after loading (preprocessed, L2-normalised if the source says so)."""
    x = self.backbone(inputs.preprocess(images), training=self.config.batch_norm == "train")
    x = tf.cast(x, tf.float32)
    return embed.l2_normalize(x) if self.l2_normalize else x

  def features(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """A sampled batch of row numbers (support [B, N, K, 1], query [B, N, Q, 1]) with
    those replaced by their images' features [.., d], in one backbone call."""
    parts = [batch["support"], batch["query"]]
    rows = [tf.reshape(tf.cast(p[..., 0], tf.int32), [-1]) for p in parts]
    x = self.embed(tf.gather(self._images, tf.concat(rows, 0)))
    dim = self.backbone.output_shape[-1]
    support, query = (tf.reshape(f, p.shape[:-1].as_list() + [dim]) for f, p in
                      zip(tf.split(x, [r.shape[0] for r in rows]), parts))
    return dict(batch, support=support, query=query)

  def apply(self, grads: List[tf.Tensor], finite: tf.Tensor) -> None:
    """One update of the backbone; a step whose loss or gradients are not finite gives
    it zero gradients (as LEO's guard, only the optimizer's momentum and decay act)."""
    self.optimizer.apply([tf.where(finite, g, tf.zeros_like(g)) for g in grads],
                         self.variables)

  def extract(self, split: str, data: EmbeddingSet) -> EmbeddingSet:
    """``data`` (a split's frozen embeddings) with the current backbone's features of its
    images in place of the embeddings: validation sees what the test will."""
    features, _, keys = embed.extract(self.backbone, self.config.image_source(split))
    if keys.tolist() != data.keys.tolist():
      raise EmbeddingDataError(f"{data.source}: the rows changed since meta-training began")
    out = dataclasses.replace(data, embeddings=features)
    return out.l2_normalized() if self.l2_normalize else out

  def finish(self, run: RunDir, which: str, source: EmbeddingSource,
             log: Callable[[str], None] = print) -> EmbeddingSource:
    """Saves the backbone of ``run``'s ``which`` checkpoints as ``RunDir.backbone`` and
    its embeddings of every split under ``RunDir.embeddings``; returns their source."""
    restore_backbone(self.backbone, run.newest(which))
    with files.atomic_path(run.backbone, run.backbone[:-len(".keras")] + ".tmp.keras") as tmp:
      self.backbone.save(tmp)
    target = self.config.source_of(source, run)
    write_embeddings(self.backbone, self.config.image_source, target)
    log(f"[end-to-end] the {which} checkpoint's backbone: {run.backbone}; its embeddings "
        f"of {', '.join(SPLITS)} under {os.path.join(target.root, target.folder)}")
    return target
