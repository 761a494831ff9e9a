"""The networks of LEO as Keras 3 layers, and their Gaussian (TFP) outputs.

Shapes carry a leading task axis B: support embeddings are [B, N, K, d].
- LatentEncoder: support set -> parameters of q(z_n | D_n^train), one Gaussian per class.
- WeightDecoder: latent codes z -> parameters of p(w | z), a Gaussian over the weights
  of class n's softmax row.
Both return raw parameters from ``call``; :func:`gaussian` turns them into a TFP
distribution (Keras 3 layers cannot return distribution objects, and tfp.layers is
tf_keras-only).
"""

from typing import Optional, Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from leo_tf.leo.masks import SupportMask, masked_mean
from leo_tf.leo.noise import dropout

tfd = tfp.distributions

MIN_STDDEV = 1e-10


def gaussian(params: tf.Tensor, stddev_offset: float) -> tfd.Normal:
  """Splits the last axis into (mean, u); stddev = exp(u) - (1 - offset), floored."""
  loc, unnormalised = tf.split(params, 2, axis=-1)
  scale = tf.maximum(tf.exp(unnormalised) - (1.0 - stddev_offset), MIN_STDDEV)
  return tfd.Normal(loc=loc, scale=scale)


def kl_to_standard_normal(posterior: tfd.Normal, sample: tf.Tensor,
                          event_axes: Sequence[int], mask=None) -> tf.Tensor:
  """One-sample Monte Carlo KL(q || N(0, I)): mean of log q(z) - log p(z) over axes
  (over the codes ``mask``, broadcast to the sample's shape, marks)."""
  prior = tfd.Normal(loc=tf.zeros_like(sample), scale=tf.ones_like(sample))
  difference = posterior.log_prob(sample) - prior.log_prob(sample)
  if mask is None:
    return tf.reduce_mean(difference, axis=list(event_axes))
  return masked_mean(difference, mask, event_axes)


class MLP(keras.layers.Layer):
  """Bias-free MLP over the last axis, ReLU between layers and none after the last."""

  def __init__(self, units: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.units = tuple(units)
    self.kernels = []

  def build(self, input_shape):
    fan_in = int(input_shape[-1])
    for i, units in enumerate(self.units):
      self.kernels.append(self.add_weight(
          name=f"kernel_{i}", shape=(fan_in, units), initializer="glorot_uniform"))
      fan_in = units

  def call(self, x):
    for i, kernel in enumerate(self.kernels):
      x = tf.tensordot(x, kernel, axes=1)
      if i < len(self.kernels) - 1:
        x = tf.nn.relu(x)
    return x


class RelationNetwork(MLP):
  """g over all ordered pairs (i, j) of a task's codes, averaged over j.

  The first layer is linear in concat(c_i, c_j) = c_i A + c_j B, so it is computed per
  code and broadcast over pairs instead of materialising [NK, NK, 2h] concatenations;
  the last layer is linear too, so it is applied after the mean over j (once per code).
  ``pairwise_reference`` is the literal form, kept to pin the two together in tests.
  With ``present`` [B, M] (1 for a real code) the mean over j runs over the real codes
  only; the rows of padded codes i are left for the caller to mask. (Not named ``mask``:
  Keras fills an argument of that name from its own masking.)
  """

  def call(self, codes, present=None):
    """codes [B, M, h] -> [B, M, out], M = N*K."""
    half = int(codes.shape[-1])
    first, last = self.kernels[0], self.kernels[-1]
    left = tf.tensordot(codes, first[:half], axes=1)                   # [B, M(i), u]
    right = tf.tensordot(codes, first[half:], axes=1)                  # [B, M(j), u]
    if len(self.kernels) == 1:
      if present is None:
        return left + tf.reduce_mean(right, axis=1, keepdims=True)
      return left + masked_mean(right, present[:, :, None], [1])[:, None, :]
    x = left[:, :, None, :] + right[:, None, :, :]                     # [B, M, M, u]
    for kernel in self.kernels[1:-1]:
      x = tf.tensordot(tf.nn.relu(x), kernel, axes=1)
    # The last layer is linear: averaging over j before it saves a pairwise matmul.
    mean = (tf.reduce_mean(tf.nn.relu(x), axis=2) if present is None
            else masked_mean(tf.nn.relu(x), present[:, None, :, None], [2]))
    return tf.tensordot(mean, last, axes=1)

  def build(self, input_shape):
    super().build(tuple(input_shape[:-1]) + (2 * int(input_shape[-1]),))

  def pairwise_reference(self, codes):
    m = tf.shape(codes)[1]
    left = tf.tile(codes[:, :, None, :], [1, 1, m, 1])
    right = tf.tile(codes[:, None, :, :], [1, m, 1, 1])
    return tf.reduce_mean(MLP.call(self, tf.concat([left, right], axis=-1)), axis=2)


class LatentEncoder(keras.layers.Layer):
  """Support set [B, N, K, d] -> Gaussian parameters [B, N, 2 * latent] per class."""

  def __init__(self, latent_size: int, hidden: Sequence[int] = (),
               relation_hidden: Optional[Sequence[int]] = (128, 128),
               dropout_rate: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.latent_size = latent_size
    self.dropout_rate = dropout_rate
    with_relation = relation_hidden is not None
    code_size = latent_size if with_relation else 2 * latent_size
    self.per_example = MLP(tuple(hidden) + (code_size,), name="encoder")
    self.relation = (RelationNetwork(tuple(relation_hidden) + (2 * latent_size,),
                                     name="relation_network") if with_relation else None)

  def call(self, support, training=False, keep=None, support_mask: SupportMask = None):
    """``keep``: dropout decisions for the support set (leo_tf.leo.noise), or None;
    ``support_mask``: the real examples of a padded support set (relation pairs among them,
    means over a class's own shots), or None."""
    x = dropout(support, keep if training else None, self.dropout_rate)
    if support_mask is None:
      return tf.reduce_mean(self._codes(x), axis=2)                       # [B, N, 2 * latent]
    # Only the real examples, packed: the padded grid's pairs would cost (N*K)^2.
    packed, present = support_mask.pack(x)                                # [B, P, d]
    return support_mask.class_mean(support_mask.unpack(self._codes(packed, present)))

  def _codes(self, x, present=None):
    """Per-example codes [..., M, 2 * latent] of x [B, ..., M, d] (the relation network's
    pairs over M, within each task; over the examples ``present`` [B, M] marks)."""
    codes = self.per_example(x)
    if self.relation is None:
      return codes
    flat = tf.reshape(codes, [tf.shape(x)[0], -1, codes.shape[-1]])     # [B, N*K, h]
    return tf.reshape(self.relation(flat, present),
                      tf.concat([tf.shape(x)[:-1], [2 * self.latent_size]], 0))

  def kernels(self):
    return list(self.per_example.kernels) + (
        list(self.relation.kernels) if self.relation is not None else [])


class WeightDecoder(keras.layers.Layer):
  """Latent codes [..., latent] -> Gaussian parameters [..., 2 * dim] of class weights."""

  def __init__(self, dim: int, hidden: Sequence[int] = (), **kwargs):
    super().__init__(**kwargs)
    self.network = MLP(tuple(hidden) + (2 * dim,), name="decoder")

  def call(self, latents):
    return self.network(latents)

  def kernels(self):
    return list(self.network.kernels)
