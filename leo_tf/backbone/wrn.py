"""Wide ResNet (Zagoruyko & Komodakis, 2016) as a Keras 3 functional model.

WRN-d-k has (d - 4) / 6 pre-activation basic blocks in each of 3 groups of widths
16k, 32k and 64k; global average pooling of the last group is the embedding (640-d
for WRN-28-10). The LEO paper pre-trains WRN-28-10 "with 3 steps of dimensionality
reduction" on 80x80 images: we read that as three stride-2 groups (80 -> 40 -> 20 -> 10,
``group_strides=(2, 2, 2)``, set in gin/backbone/wrn_28_10.gin). Small inputs such as
32x32 glyphs keep the CIFAR strides (1, 2, 2). Strides do not change the parameter count.
"""

import math
from typing import Optional, Sequence, Tuple

import gin
import keras
from keras import layers
import tensorflow as tf

_BN = dict(momentum=0.9, epsilon=1e-5)


def _bn_relu(x, name: str, suffix: str, synchronized: bool):
  x = layers.BatchNormalization(**_BN, synchronized=synchronized, name=f"{name}_bn{suffix}")(x)
  return layers.ReLU(name=f"{name}_relu{suffix}")(x)


def _conv(filters: int, kernel: int, stride: int, weight_decay: float, name: str):
  # The head-less net has no bias: every convolution is followed by batch norm.
  regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
  return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                       kernel_initializer="he_normal", kernel_regularizer=regularizer, name=name)


def _basic_block(x, filters: int, stride: int, dropout: float, weight_decay: float,
                 sync_bn: bool, name: str):
  """Pre-activation block: BN-ReLU-conv3x3 (-dropout) -BN-ReLU-conv3x3, plus shortcut."""
  pre = _bn_relu(x, name, "1", sync_bn)
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    # The projection sees the pre-activated input, as in the reference WRN.
    shortcut = _conv(filters, 1, stride, weight_decay, f"{name}_proj")(pre)
  y = _conv(filters, 3, stride, weight_decay, f"{name}_conv1")(pre)
  y = _bn_relu(y, name, "2", sync_bn)
  if dropout:
    y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
  y = _conv(filters, 3, 1, weight_decay, f"{name}_conv2")(y)
  return layers.Add(name=f"{name}_add")([shortcut, y])


def blocks_per_group(depth: int) -> int:
  if depth < 10 or (depth - 4) % 6:
    raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...); got {depth}")
  return (depth - 4) // 6


@gin.configurable
def build_wrn(depth: int = 28,
              width: int = 10,
              dropout: float = 0.0,
              input_shape: Tuple[Optional[int], Optional[int], int] = (None, None, 3),
              group_strides: Sequence[int] = (1, 2, 2),
              weight_decay: float = 0.0,
              sync_batch_norm: Optional[bool] = None,
              name: Optional[str] = None) -> keras.Model:
  """The WRN feature extractor: images (float, normalised) -> [batch, 64 * width].

  ``weight_decay`` adds L2 penalties to the model's losses; pre-training uses the
  optimizer's decoupled decay instead, so it is 0 by default. ``sync_batch_norm``
  (default: when built under a strategy with several replicas) computes batch
  statistics over all replicas, so every replica and worker ends with the same
  moving averages, not only the same weights.
  """
  if sync_batch_norm is None:
    sync_batch_norm = tf.distribute.get_strategy().num_replicas_in_sync > 1
  n = blocks_per_group(depth)
  if len(group_strides) != 3:
    raise ValueError(f"group_strides needs 3 entries, got {group_strides}")
  images = keras.Input(shape=tuple(input_shape), name="images")
  x = _conv(16, 3, 1, weight_decay, "stem_conv")(images)
  for g, (filters, stride) in enumerate(zip((16 * width, 32 * width, 64 * width),
                                            group_strides)):
    for b in range(n):
      x = _basic_block(x, filters, stride if b == 0 else 1, dropout, weight_decay,
                       sync_batch_norm, f"group{g + 1}_block{b + 1}")
  x = _bn_relu(x, "final", "", sync_batch_norm)
  embedding = layers.GlobalAveragePooling2D(name="embedding")(x)
  return keras.Model(images, embedding, name=name or f"wrn_{depth}_{width}")


def add_classifier_head(backbone: keras.Model, num_classes: int) -> keras.Model:
  """Backbone + linear layer to ``num_classes`` logits, for supervised pre-training."""
  logits = layers.Dense(num_classes, name="classifier")(backbone.output)
  return keras.Model(backbone.input, logits, name=f"{backbone.name}_classifier")


def count_params(model: keras.Model) -> int:
  return sum(math.prod(w.shape) for w in model.trainable_weights)
