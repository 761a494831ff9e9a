"""Every random number of one training forward pass, drawn up front in a few bulk ops.

LEO redraws dropout on the support set at every inner step, samples z per shot and
samples the decoded weights at every decode. Drawing each of these with its own seed and
random op costs ~4 small ops per use (seed fold-in, draw, compare, scale); drawing them
all at once is four random ops per forward pass. Both inner-loop implementations
(``LEOConfig.inner_gradients``) read the same draws, which is what lets the tests pin the
closed-form loop to the GradientTape loop under a fixed seed.

All draws are stateless functions of the seed. Random bits cost ~3.5 ns per 32-bit word
on our CPUs (Philox), a third of a 1-shot training step before this module: dropout
decisions use 16 bits each and normals come from a vectorised Box-Muller transform.
"""

import math
from typing import List, Optional

import tensorflow as tf

from leo_tf.leo.config import LEOConfig

# Which fold of the forward pass's seed each bulk draw uses.
_SUPPORT_DROPOUT, _LATENT, _DECODE, _QUERY_DROPOUT = 1, 2, 3, 4


def _seed(seed, stream: int) -> tf.Tensor:
  return tf.cast(tf.random.experimental.stateless_fold_in(seed, stream), tf.int32)


def _random_bits(count, seed) -> tf.Tensor:
  """``count`` uniform random uint32 words from Philox (named explicitly: "auto_select"
  is ThreeFry under XLA, ~100x slower on CPU)."""
  return tf.random.stateless_uniform(tf.reshape(count, [1]), seed=seed, minval=None,
                                     maxval=None, dtype=tf.uint32, alg="philox")


def keep_masks(shape, rate: float, seed) -> tf.Tensor:
  """Dropout decisions (bool, True = keep) that drop with probability ``rate``.

  Each decision uses 16 random bits (half a Philox word; generating the bits is most of
  the cost), so the drop probability is ``rate`` rounded to a multiple of 2**-16
  (0.3 -> 0.300003). Booleans, not multipliers: :func:`dropout` selects between the
  scaled input and zero in one pass, with no cast.
  """
  shape = tf.convert_to_tensor(shape)
  count = tf.reduce_prod(shape)
  bits = tf.reshape(tf.bitcast(_random_bits((count + 1) // 2, seed), tf.uint16), [-1])
  keep = bits[:count] >= tf.constant(min(round(rate * 65536), 65535), tf.uint16)
  return tf.reshape(keep, shape)


def dropout(x: tf.Tensor, keep: Optional[tf.Tensor], rate: float) -> tf.Tensor:
  """Inverted dropout of x with the decisions ``keep`` (None: x unchanged)."""
  if keep is None:
    return x
  return tf.where(keep, x * (1.0 / (1.0 - rate)), tf.zeros_like(x))


def standard_normal(shape, seed) -> tf.Tensor:
  """N(0, 1) samples by the Box-Muller transform of Philox bits.

  Written with vectorised TF ops it is ~1.6x faster on CPU than
  ``tf.random.stateless_normal`` (whose kernel transforms one pair at a time). The
  uniforms are 32-bit words rounded to float32, in (0, 1], so |z| <= 6.8.
  """
  shape = tf.convert_to_tensor(shape)
  count = tf.reduce_prod(shape)
  pairs = (count + 1) // 2
  bits = tf.reshape(_random_bits(2 * pairs, seed), [2, pairs])
  uniform = (tf.cast(bits, tf.float32) + 0.5) * (2.0 ** -32)            # (0, 1]
  radius = tf.sqrt(-2.0 * tf.math.log(uniform[0]))
  angle = (2.0 * math.pi) * uniform[1]
  normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
  return tf.reshape(normal[:count], shape)


class Noise:
  """The random draws of one training forward pass of a meta-batch.

  Attributes (None when the configuration draws nothing of that kind):
    encoder_keep: dropout decisions (:func:`keep_masks`) for the encoder's input [B, N, K, d].
    latent: standard normal [B, N, S, latent] for z0 = mu + sigma * latent.
    latent_keep: one dropout decision tensor [B, N, K, d] per latent step.
    decode: standard normal [B, N, S, d] per decode (latent steps + the final one).
    finetune_keep: one dropout decision tensor [B, N, K, d] per fine-tuning step.
  """

  def __init__(self, config: LEOConfig, support: tf.Tensor, seed, samples: int, *,
               encoder: bool, latents: bool):
    """``support`` [B, N, K, d]; ``samples`` S, latent codes per class; ``encoder`` and
    ``latents``: whether the model has an encoder and a latent space (MAML has neither)."""
    if seed is None:  # unseeded training: one draw from the global generator
      seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    self.seed = tf.cast(seed, tf.int64)
    self.rate = config.dropout_rate
    shape = tf.shape(support)
    latent_steps, finetune_steps = config.inner_steps(True), config.finetune_steps(True)

    self.encoder_keep: Optional[tf.Tensor] = None
    self.latent_keep: List[Optional[tf.Tensor]] = [None] * latent_steps
    self.finetune_keep: List[Optional[tf.Tensor]] = [None] * finetune_steps
    uses = (int(encoder) + (latent_steps if latents else 0) + finetune_steps)
    if self.rate > 0 and uses:
      masks = tf.unstack(keep_masks(tf.concat([[uses], shape], 0), self.rate,
                                    _seed(self.seed, _SUPPORT_DROPOUT)), num=uses)
      if encoder:
        self.encoder_keep = masks.pop(0)
      if latents:
        self.latent_keep, masks = masks[:latent_steps], masks[latent_steps:]
      self.finetune_keep = masks

    self.latent: Optional[tf.Tensor] = None
    self.decode: List[Optional[tf.Tensor]] = [None] * (latent_steps + 1)
    if config.stochastic and latents:
      code_shape = tf.stack([shape[0], shape[1], samples, config.latent_size])
      self.latent = standard_normal(code_shape, _seed(self.seed, _LATENT))
      weight_shape = tf.stack([latent_steps + 1, shape[0], shape[1], samples, shape[3]])
      self.decode = tf.unstack(standard_normal(weight_shape, _seed(self.seed, _DECODE)),
                               num=latent_steps + 1)

  def query_keep(self, query: tf.Tensor) -> Optional[tf.Tensor]:
    """Dropout decisions for the query set's embeddings (None without dropout)."""
    if self.rate == 0:
      return None
    return keep_masks(tf.shape(query), self.rate, _seed(self.seed, _QUERY_DROPOUT))
