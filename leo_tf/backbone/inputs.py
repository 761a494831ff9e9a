"""Image pipelines for pre-training and extraction, from an ImageSplit-like source.

A source has ``dataset`` (dicts with uint8 'image' [H, W, C], int32 'label', string
'key'), ``class_names``, ``num_examples`` and ``image_shape``.
"""

from typing import Optional, Sequence

import gin
import tensorflow as tf


@gin.configurable
def preprocess(image: tf.Tensor, image_size: Optional[Sequence[int]] = None,
               mean: float = 0.5, std: float = 0.5) -> tf.Tensor:
  """uint8 [H, W, C] -> float32, optionally resized to ``image_size`` (h, w)."""
  image = tf.cast(image, tf.float32) / 255.0
  if image_size is not None:
    image = tf.image.resize(image, tuple(image_size), antialias=True)
  return (image - mean) / std


@gin.configurable
def augment(image: tf.Tensor, pad: int = 4, flip: bool = False) -> tf.Tensor:
  """Random crop after ``pad`` pixels of reflection padding; optional mirror.

  Mirroring is off by default: a mirrored character is not the same character.
  Reflection keeps the padded border like the glyph background, whatever its colour.
  """
  if pad:
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.random_crop(padded, shape)
  if flip:
    image = tf.image.random_flip_left_right(image)
  return image


def held_out_mask(key: tf.Tensor, fraction: float) -> tf.Tensor:
  """True for the ~``fraction`` of examples kept aside, decided by a hash of the key
  so every run and every worker agrees without a shuffle."""
  bucket = tf.strings.to_hash_bucket_fast(key, 1000)
  return bucket < int(round(fraction * 1000))


def _pairs(source, holdout_fraction: float, held_out: bool) -> tf.data.Dataset:
  ds = source.dataset
  if holdout_fraction > 0:
    ds = ds.filter(lambda ex: tf.equal(held_out_mask(ex["key"], holdout_fraction), held_out))
  return ds.map(lambda ex: (preprocess(ex["image"]), tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  # In-memory and generated datasets have no files to shard across workers.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return ds.with_options(options)


def train_dataset(source, batch_size: int, seed: int, holdout_fraction: float = 0.0,
                  cache: bool = True, shuffle_buffer: int = 10000) -> tf.data.Dataset:
  """Endless, shuffled, augmented batches of (images, labels); the global batch size."""
  ds = _pairs(source, holdout_fraction, held_out=False)
  if cache:
    ds = ds.cache()
  # A fixed seed gives all workers the same order, which DATA sharding needs.
  ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return _shard_by_data(ds)


def eval_dataset(source, batch_size: int, holdout_fraction: float) -> tf.data.Dataset:
  """The held-out part of ``source``, one pass, no augmentation."""
  ds = _pairs(source, holdout_fraction, held_out=True)
  return _shard_by_data(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def image_channels(source) -> int:
  """Channel count from ``image_shape`` or, when that is None, from the first element."""
  if source.image_shape is not None:
    return int(source.image_shape[-1])
  return int(next(iter(source.dataset.take(1)))["image"].shape[-1])
