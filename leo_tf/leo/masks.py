"""Padded episodes: which support examples and which classes of a meta-batch are real.

An unbalanced support set, or a meta-batch of episodes with different N, is padded to
[B, N, K, d] (K the most shots of a class, N the most classes of an episode) and comes
with a support mask [B, N, K], 1 for a real example. Class n has K_n = sum_k mask[b, n, k]
shots; a class with none is padding. What the model does with the mask (LEO.adapt):
padded examples are zeroed and left out of every sum and mean; a padded class's logits
get LOGIT_PADDING, so it takes no probability and no gradient reaches its weights. The
encoder runs on the real examples only, packed to [B, P, d] (P the most real examples of a
task, SupportMask.pack): its relation network costs P^2 pairs, not (N*K)^2 padded ones.

Without a mask the model builds none of these ops: its graph is the unmasked one.
"""

from typing import Sequence

import tensorflow as tf

# Added to a padded class's logits: exp of it underflows to 0 in float32, and it is
# finite, so a masked-out query of a padded class costs 0 * finite, never NaN.
LOGIT_PADDING = -1e9


def masked_mean(x: tf.Tensor, mask: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
  """Mean of ``x`` over ``axes`` counting only the entries ``mask`` (broadcast to x's
  shape, 1 or 0) marks; 0 where none is marked."""
  mask = tf.broadcast_to(mask, tf.shape(x))
  count = tf.reduce_sum(mask, axis=list(axes))
  return tf.reduce_sum(x * mask, axis=list(axes)) / tf.maximum(count, 1.0)


class SupportMask:
  """A support mask [B, N, K] and the per-class quantities derived from it."""

  def __init__(self, mask):
    self.examples = tf.cast(mask, tf.float32)                           # [B, N, K]
    self.shots = tf.reduce_sum(self.examples, axis=2)                   # K_n [B, N]
    self.classes = tf.cast(self.shots > 0, tf.float32)                  # [B, N]

  def tile(self, multiples: int) -> "SupportMask":
    """The mask of a support set tiled ``multiples`` times along the task axis."""
    return SupportMask(tf.tile(self.examples, [multiples, 1, 1]))

  def zero_padding(self, support: tf.Tensor) -> tf.Tensor:
    """``support`` [B, N, K, d] with its padded examples zeroed: nothing of theirs (not
    even a NaN) reaches an output or a gradient, and a zero row adds nothing to the
    closed-form weight gradient X^T (P - Y)."""
    return tf.where(self.examples[..., None] > 0, support, tf.zeros_like(support))

  @property
  def logit_bias(self) -> tf.Tensor:
    """[B, N]: 0 for a real class, LOGIT_PADDING for a padded one."""
    return (1.0 - self.classes) * LOGIT_PADDING

  def class_mean(self, x: tf.Tensor) -> tf.Tensor:
    """[B, N, K, h] -> [B, N, h], the mean over each class's own shots (0 for padding)."""
    return (tf.reduce_sum(x * self.examples[..., None], axis=2) /
            tf.maximum(self.shots, 1.0)[..., None])

  def _flat(self) -> tf.Tensor:
    """The mask as [B, N*K]: (class, shot) order."""
    return tf.reshape(self.examples, [tf.shape(self.examples)[0], -1])

  def pack(self, x: tf.Tensor):
    """x [B, N, K, h] -> its real examples [B, P, h] in (class, shot) order, P the most of
    any task, and which of them are real [B, P] (a task with fewer ends in padding)."""
    flat = self._flat()
    width = tf.cast(tf.reduce_max(tf.reduce_sum(flat, axis=1)), tf.int32)
    # Stable: real examples first, in their order; then the padding.
    order = tf.argsort(1.0 - flat, axis=1, stable=True)[:, :width]       # [B, P]
    rows = tf.reshape(x, tf.concat([tf.shape(flat), tf.shape(x)[3:]], 0))
    return tf.gather(rows, order, batch_dims=1), tf.gather(flat, order, batch_dims=1)

  def unpack(self, packed: tf.Tensor) -> tf.Tensor:
    """The inverse of ``pack``: packed [B, P, h] -> [B, N, K, h], zeros at the padded
    examples (a real example's slot is the count of real ones before it)."""
    flat = self._flat()
    slot = tf.where(flat > 0, tf.cast(tf.cumsum(flat, axis=1, exclusive=True), tf.int32),
                    tf.shape(packed)[1])                                  # P: the zero row
    rows = tf.gather(tf.pad(packed, [[0, 0], [0, 1], [0, 0]]), slot, batch_dims=1)
    return tf.reshape(rows, tf.concat([tf.shape(self.examples), tf.shape(packed)[2:]], 0))

  def examples_per_task(self) -> tf.Tensor:
    """[B, 1]: the real support examples of each task."""
    return tf.reduce_sum(self.shots, axis=1, keepdims=True)

  def codes(self, samples: int) -> tf.Tensor:
    """Which of S latent codes per class [B, N, S] are real: one per real shot when the
    codes are drawn per shot (S = K), else the class's single code."""
    return self.examples if samples > 1 else self.classes[:, :, None]

  def code_counts(self, samples: int) -> tf.Tensor:
    """S_n [B, N], the real codes of each class (its shots, or one)."""
    return self.shots if samples > 1 else self.classes
