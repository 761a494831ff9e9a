"""Embedding extraction: the pre-trained backbone (no head) over each split, written in
the released layout ``<root>/<dataset>/<crop>/<split>_embeddings.pkl``.

Extraction runs in the precision the backbone was trained in unless
``write_split.precision`` names another (leo_tf.backbone.precision), optionally
compiled with XLA; the embeddings are float32 in every case."""

import functools
import os
import time
from typing import Callable, Dict, Optional, Tuple

import gin
import keras
import numpy as np
import tensorflow as tf

from leo_tf.backbone import inputs, precision as precision_lib
from leo_tf.backbone.pretrain import BACKBONE_FILE
from leo_tf.data import embeddings as emb_lib


def load_backbone(model_dir: str) -> keras.Model:
  path = os.path.join(model_dir, BACKBONE_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no pre-trained backbone at {path}: run leo-pretrain with this model_dir first")
  return keras.saving.load_model(path, compile=False)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
  """Rows divided by max(norm, 1e-12), as embedding files are on load
  (``embeddings.l2_normalize_rows``), in the graph (serving, end-to-end LEO): each row is
  scaled by its largest |value| first, so rows of 1e20, whose norm overflows float32,
  are not divided by Inf into zeros."""
  scale = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
  scale = tf.where(scale > 0, scale, tf.ones_like(scale))
  y = x / scale
  return y / tf.maximum(tf.norm(y, axis=-1, keepdims=True), emb_lib.NORM_FLOOR / scale)


@functools.lru_cache(maxsize=1)
def traced_backbone(backbone: keras.Model, precision: Optional[str] = None,
                    jit_compile: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
  """``backbone`` (in ``precision``; None: as saved) as one traced function, images
  [batch, H, W, C] -> float32 embeddings, for any batch and image size. Kept for the
  last backbone: every split of a run shares one trace (a function per split, retraced
  again for each split's smaller last batch, made TensorFlow warn about retracing)."""
  if precision is not None:
    backbone = precision_lib.with_policy(
        backbone, precision_lib.check(precision, "write_split.precision"))
  channels = backbone.input_shape[-1]
  return tf.function(lambda x: tf.cast(backbone(x, training=False), tf.float32),
                     input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)],
                     jit_compile=jit_compile)


def extract(backbone: keras.Model, source, batch_size: int = 256, jit_compile: bool = False,
            precision: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(embeddings [n, d] float32, labels [n], keys [n]) for every example of ``source``;
  ``jit_compile``: the backbone compiled with XLA (once per batch shape)."""
  ds = source.dataset.map(
      lambda ex: (inputs.preprocess(ex["image"]), ex["label"], ex["key"]),
      num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
  embed = traced_backbone(backbone, precision, jit_compile)
  outputs, labels, keys = [], [], []
  for images, batch_labels, batch_keys in ds:
    outputs.append(embed(images).numpy())
    labels.append(batch_labels.numpy())
    keys.extend(batch_keys.numpy().tolist())
  labels = np.concatenate(labels).astype(np.int64)
  # "<id>-<class>-<file>": the source's own key (a file name) is the file part.
  released = np.array([emb_lib.make_key(i, source.class_names[l], k.decode("utf-8") or None)
                       for i, (l, k) in enumerate(zip(labels, keys))])
  return np.concatenate(outputs).astype(np.float32), labels, released


@gin.configurable(denylist=["backbone", "source", "root", "split"])
def write_split(backbone: keras.Model, source, root: str, dataset: str, crop: str,
                split: str, batch_size: int = 256, precision: Optional[str] = None,
                jit_compile: bool = False) -> str:
  """Extracts one split and writes it (atomically) where ``load_split`` looks, in
  ``precision`` (None: the policy the backbone was saved with)."""
  path = emb_lib.embeddings_path(root, dataset, crop, split)
  embeddings, labels, keys = extract(backbone, source, batch_size, jit_compile, precision)
  emb_lib.save_embeddings(path, embeddings, labels, keys)
  return path


def embed_splits(model_dir: str, sources: Dict[str, Callable[[], object]], root: str,
                 dataset: str, crop: str = "center", overwrite: bool = False,
                 log: Callable[[str], None] = print) -> Dict[str, str]:
  """Writes every split in ``sources`` (split name -> function returning the source);
  splits whose file exists are kept unless ``overwrite``."""
  backbone = None
  paths = {}
  for split, make_source in sources.items():
    path = emb_lib.embeddings_path(root, dataset, crop, split)
    if os.path.exists(path) and not overwrite:
      log(f"{split}: {path} exists, kept")
    else:
      backbone = backbone or load_backbone(model_dir)
      tick = time.time()
      write_split(backbone, make_source(), root, dataset, crop, split)
      log(f"{split}: wrote {path} in {time.time() - tick:.1f}s")
    paths[split] = path
  return paths
