"""The LEO model: encode the support set, adapt in latent space, fine-tune, classify.

Every tensor carries a leading task axis B (the meta-batch is vectorised). Class n of an
episode has label n. Latent codes have a sample axis S: in training each of the K shots
of a class draws its own z from the class's Gaussian (S = K, as the authors' code does);
at evaluation the mean is used once (S = 1). The logits of a class average its S decoded
weight vectors; since logits are linear in the weights this equals using their mean, so
the model carries the mean weight vector [B, N, d] ("fused" weight samples).

Step-size bookkeeping that keeps the fused form exact: in the authors' form every one of
the K copies of a class's code/weights receives 1/K of the gradient of the averaged
logits. Hence latents take steps of lr * S / K and the fused weights steps of lr / K.
With ``LEOConfig.latent_codes = "per_class"`` (the paper's form) a class has one code and
one weight vector, which take the whole step lr (``step_scale``).

Unbalanced and padded episodes (``support_mask``, leo/masks.py): class n has its own K_n
shots, and every 1/K above is 1/K_n (in training a class draws K_n codes, one per real
shot, and its weights are their mean); the support loss, the relation network's pairs,
the encoder's means, the KL and the encoder penalty count real examples and codes only,
and padded classes get the logit bias masks.LOGIT_PADDING (the adapted ``bias``). With an
all-ones mask the numbers are the unmasked ones; without a mask no mask op is built.
"""

from typing import Dict, Optional

import keras
import tensorflow as tf

from leo_tf.leo import closed_form, regularizers
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.layers import (LatentEncoder, WeightDecoder, gaussian,
                               kl_to_standard_normal, tfd)
from leo_tf.leo.masks import SupportMask, masked_mean
from leo_tf.leo.noise import Noise, dropout, standard_normal

# The seed of the random prior's fixed initial codes (LEOConfig.prior_start = "sample").
FIXED_PRIOR_SEED = (20181, 1)


def _size(support, axis: int):
  """N (axis 1) or K (axis 2) of support [B, N, K, d]: static if known, else a tensor
  (serving varies K)."""
  size = support.shape[axis]
  return size if size is not None else tf.cast(tf.shape(support)[axis], tf.float32)


def episode_accuracy(logits, mask=None) -> tf.Tensor:
  """Per-task accuracy [B] of query logits [B, N, Q, N] (the true class of query
  [b, n, q] is n) over the queries ``mask`` [B, N, Q] marks (None: all)."""
  correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                             tf.range(tf.shape(logits)[1])[None, :, None]), tf.float32)
  mask = tf.ones_like(correct) if mask is None else tf.cast(mask, tf.float32)
  return tf.reduce_sum(correct * mask, axis=[1, 2]) / tf.reduce_sum(mask, axis=[1, 2])


class LEO(keras.Model):
  """Latent Embedding Optimization over a meta-batch of episodes."""

  def __init__(self, config: LEOConfig, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.dim = dim
    c = config
    # The variant is decided here, once, by what the model holds: an encoder's posterior
    # (LEO), a decoder only (random prior N(0, I)) or neither (MAML: learned weights).
    self.encoder = self.decoder = None
    if c.initialisation == "encoder":
      self.encoder = LatentEncoder(
          c.latent_size, c.encoder_hidden,
          c.relation_hidden if c.use_relation_net else None, c.dropout_rate,
          name="latent_encoder")
    if c.initialisation != "maml":
      self.decoder = WeightDecoder(dim, c.decoder_hidden, name="weight_decoder")
    else:
      self.initial_weights = self.add_weight(
          name="initial_weights", shape=(c.num_classes, dim), initializer="zeros")
    if c.classifier_bias:
      self.initial_bias = self.add_weight(
          name="initial_bias", shape=(c.num_classes,), initializer="zeros")
    self.inner_lr = self.add_weight(
        name="inner_lr", shape=(c.latent_size,),
        initializer=keras.initializers.Constant(c.inner_lr_init),
        trainable=c.learn_inner_lr)
    self.finetune_lr = self.add_weight(
        name="finetune_lr", shape=(dim,),
        initializer=keras.initializers.Constant(c.finetune_lr_init),
        trainable=c.learn_finetune_lr)
    self._weight_offset = c.weight_offset(dim)
    # Set by end-to-end LEO (leo/end_to_end.py): gradients reach the inputs' backbone.
    self.input_gradients = False

  @property
  def latent_space(self) -> bool:
    """Whether adaptation runs on latent codes (LEO, the random prior), not on learned
    weights with no codes (MAML)."""
    return self.decoder is not None

  # ------------------------------------------------------------------ building blocks

  def logits(self, x, weights, keep=None, bias=None):
    """x [B, N, M, d] (dropout decisions ``keep``), weights [B, N, d], optional bias
    [B, N] -> [B, N, M, N]."""
    logits = tf.einsum("bnmd,bcd->bnmc", dropout(x, keep, self.config.dropout_rate), weights)
    return logits if bias is None else logits + bias[:, None, None, :]

  @staticmethod
  def cross_entropy(logits):
    """Per-example CE [B, N, M] of logits [B, N, M, N] whose true class is axis 1."""
    labels = tf.broadcast_to(tf.range(tf.shape(logits)[1])[None, :, None],
                             tf.shape(logits)[:3])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

  def support_loss(self, support, weights, keep, bias=None, mask: SupportMask = None):
    """Sum of support cross-entropies (the inner-loop objective), summed over tasks too
    (``inner_loss = 'mean'`` is carried by the step sizes, see step_scale), over the
    real examples of a padded support set."""
    ce = self.cross_entropy(self.logits(support, weights, keep, bias))
    return tf.reduce_sum(ce if mask is None else ce * mask.examples)

  def latent_samples(self, training: bool, support=None) -> int:
    """S, codes per class: one per shot when sampling in training, else the mean only.
    The shots are LEOConfig.num_shots, or the K of a padded ``support`` [B, N, K, d]."""
    c = self.config
    if not (training and c.stochastic and c.latent_codes == "per_shot"):
      return 1
    return c.num_shots if support is None else support.shape[2]

  def step_scale(self, support, mask: SupportMask = None):
    """The factor on a step size for one class's code or (fused) weights: 1/K when the
    class stands for K per-shot copies that each take 1/K of the gradient, 1 for a single
    code or weight vector (the paper's form, MAML), and 1/(N*K) more on the mean loss.
    With a mask it is per class [B, N]: 1/K_n, and 1/(the task's real examples) more."""
    c = self.config
    per_shot = c.latent_codes == "per_shot" and self.latent_space
    if mask is not None:
      scale = 1.0 / tf.maximum(mask.shots, 1.0) if per_shot else tf.ones_like(mask.shots)
      return scale / mask.examples_per_task() if c.inner_loss == "mean" else scale
    n, k = _size(support, 1), _size(support, 2)
    scale = 1.0 / k if per_shot else 1.0
    return scale / (n * k) if c.inner_loss == "mean" else scale

  def initial_latents(self, support, training, noise: Optional[Noise],
                      mask: SupportMask = None):
    """z0 [B, N, S, latent] and the KL of q(z | D_train) to N(0, I) per task [B]."""
    c = self.config
    b, n = tf.shape(support)[0], tf.shape(support)[1]
    sample = noise is not None and noise.latent is not None
    samples = self.latent_samples(training, None if mask is None else support)
    shape = [b, n, samples if sample else 1, c.latent_size]
    zero_kl = tf.zeros([b])
    if self.encoder is None:  # the random prior
      if sample:
        return noise.latent, zero_kl
      if c.prior_start == "sample":  # fixed, so evaluation stays deterministic
        return standard_normal(tf.stack(shape), FIXED_PRIOR_SEED), zero_kl
      return tf.zeros(shape), zero_kl
    keep = noise.encoder_keep if noise is not None else None
    posterior = gaussian(self.encoder(support, training=training, keep=keep,
                                      support_mask=mask),
                         c.latent_stddev_offset)                         # [B, N, latent]
    if not sample:
      return posterior.loc[:, :, None, :], zero_kl
    per_shot = tfd.Normal(tf.broadcast_to(posterior.loc[:, :, None, :], shape),
                          tf.broadcast_to(posterior.scale[:, :, None, :], shape))
    latents = per_shot.loc + per_shot.scale * noise.latent
    codes = None if mask is None else mask.codes(samples)[..., None]
    return latents, kl_to_standard_normal(per_shot, latents, (1, 2, 3), codes)

  def decode(self, latents, noise=None, mask: SupportMask = None):
    """Latents [B, N, S, latent] -> mean over S (a padded episode's real codes) of the
    weights [B, N, d], sampled with the standard normal ``noise`` [B, N, S, d] (None: the
    means). A linear decoder with S > 1 samples makes no [B, N, S, 2d] outputs
    (closed_form.LinearDecoding: the mean half decodes the mean code once)."""
    if latents.shape[2] == 1 or self.config.decoder_hidden:
      return self.decode_reference(latents, noise, mask)
    return self._linear_decoding(latents, mask)(
        tf.reshape(latents, [-1, latents.shape[3]]), noise)

  def _linear_decoding(self, latents, mask: SupportMask = None) -> closed_form.LinearDecoding:
    """The closed-form decoding of codes shaped like ``latents`` [B, N, S, latent]."""
    if not self.decoder.built:
      self.decoder(latents[:, :, :1])
    return closed_form.LinearDecoding(
        tf.convert_to_tensor(self.decoder.kernels()[0]), self._weight_offset, latents,
        None if mask is None else mask.codes(latents.shape[2]))

  def decode_reference(self, latents, noise=None, mask: SupportMask = None):
    """The literal decode: every sample's full Gaussian, sampled, then averaged (tests)."""
    weights = gaussian(self.decoder(latents), self._weight_offset)
    sampled = weights.loc if noise is None else weights.loc + weights.scale * noise
    if mask is None or latents.shape[2] == 1:
      return tf.reduce_mean(sampled, axis=2)
    return masked_mean(sampled, mask.codes(latents.shape[2])[..., None], [2])

  def _inputs(self, x) -> tf.Tensor:
    """Support or query features as a tensor; a constant to meta-learning unless
    ``input_gradients``."""
    x = tf.convert_to_tensor(x)
    return x if self.input_gradients else tf.stop_gradient(x)

  def _gradient_step(self, objective, point, step_size):
    """point - step_size * d objective(point) / d point; second order unless configured.
    ``point`` and ``step_size`` are tensors or tuples of them, matched in order."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(point)
      loss = objective(point)
    grad = tape.gradient(loss, point)
    if self.config.first_order:
      grad = tf.nest.map_structure(tf.stop_gradient, grad)
    return tf.nest.map_structure(lambda p, g, lr: p - lr * g, point, grad, step_size)

  def _closed_form(self, latent_loop: bool) -> bool:
    """Whether a loop runs in closed form (the latent loop needs a linear decoder)."""
    c = self.config
    return c.inner_gradients == "closed_form" and not (latent_loop and c.decoder_hidden)

  def adapt_latents(self, support, latents, training, noise: Optional[Noise] = None,
                    mask: SupportMask = None, bias=None):
    """Gradient descent on the codes; returns the final codes and their decoded weights.
    A padded episode's ``mask`` and logit ``bias`` [B, N] (see adapt)."""
    c = self.config
    steps = c.inner_steps(training)
    keeps = noise.latent_keep if noise is not None else [None] * steps
    decode_noise = noise.decode if noise is not None else [None] * (steps + 1)
    samples, scale = latents.shape[2], self.step_scale(support, mask)
    if self._closed_form(latent_loop=True):
      if mask is not None:  # per code: lr / K_n for a real one, 0 for padding
        scale = tf.reshape(scale[:, :, None] * mask.codes(samples), [-1, 1])
      return closed_form.adapt_latents(
          self._linear_decoding(latents, mask), latents, support, keeps=keeps,
          decode_noise=decode_noise, step_size=self.inner_lr * scale,
          first_order=c.first_order, dropout_rate=c.dropout_rate, bias=bias)
    # The decode's mean over a class's S (S_n) codes is undone: a code steps lr / K.
    step_size = self.inner_lr * (samples * scale if mask is None else
                                 (mask.code_counts(samples) * scale)[:, :, None, None])
    for keep, weight_noise in zip(keeps, decode_noise):
      latents = self._gradient_step(
          lambda z: self.support_loss(support, self.decode(z, weight_noise, mask), keep,
                                      bias, mask),
          latents, step_size)
    return latents, self.decode(latents, decode_noise[-1], mask)

  def finetune(self, support, weights, training, noise: Optional[Noise] = None, bias=None,
               mask: SupportMask = None):
    """Gradient descent on the (fused) classifier weights [B, N, d] and, with
    LEOConfig.classifier_bias, the bias [B, N] (MAML's original form: its step is the
    fixed finetune_lr_init, and the loop runs through the tape); otherwise ``bias`` is a
    padded episode's constant logit bias, or None. Returns the weights and the bias."""
    c = self.config
    keeps = noise.finetune_keep if noise is not None else [None] * c.finetune_steps(training)
    scale = self.step_scale(support, mask)                     # a number, or [B, N]
    params = (weights,)
    step_sizes = (self.finetune_lr * (scale if mask is None else scale[:, :, None]),)
    if c.classifier_bias:
      params, step_sizes = (weights, bias), step_sizes + (c.finetune_lr_init * scale,)
    elif self._closed_form(latent_loop=False):
      return closed_form.finetune(weights, support, keeps=keeps, step_size=step_sizes[0],
                                  first_order=c.first_order, dropout_rate=c.dropout_rate,
                                  bias=bias), bias
    for keep in keeps:
      params = self._gradient_step(
          lambda p: self.support_loss(support, p[0], keep,
                                      p[1] if c.classifier_bias else bias, mask),
          params, step_sizes)
    return params[0], (params[1] if c.classifier_bias else bias)

  # ------------------------------------------------------------------ the forward pass

  def sample_latents(self, support, num_samples: int, seed,
                     mask: SupportMask = None) -> tf.Tensor:
    """S codes per class from the test-time posterior q(z | D_train) (N(0, I) for the
    random-prior ablation): [S, B, N, latent], drawn with ``noise.standard_normal``."""
    c = self.config
    b, n = tf.shape(support)[0], tf.shape(support)[1]
    normal = standard_normal(tf.stack([num_samples, b, n, c.latent_size]),
                             tf.cast(seed, tf.int64))
    if self.encoder is None:  # the random prior
      return normal
    posterior = gaussian(self.encoder(support, training=False, support_mask=mask),
                         c.latent_stddev_offset)
    return posterior.loc[None] + posterior.scale[None] * normal

  def adapt(self, support, training=False, seed=None, samples: int = 1,
            support_mask=None) -> Dict[str, tf.Tensor]:
    """The whole adaptation of a meta-batch: returns weights, bias (None, or [B, N]),
    codes, the KL, ``mask`` (the support mask's SupportMask, or None) and, in training,
    the forward pass's :class:`Noise` (the query's dropout comes from it).

    ``samples`` > 1 (evaluation only) adapts S codes per class drawn with ``seed``
    (:meth:`sample_latents`, a test-time ensemble), folded sample-major into the task
    axis: weights [S*B, N, d]. The model's vectorised loops run unchanged.

    ``support_mask`` [B, N, K] (1 for a real example) adapts on a padded support set:
    unequal shots per class, and classes without shots padded out. The returned bias then
    holds masks.LOGIT_PADDING for padded classes, so ``logits(x, weights, bias=bias)``
    never predicts them.
    """
    support = self._inputs(support)
    mask = None
    if support_mask is not None:
      mask = SupportMask(support_mask)
      support = mask.zero_padding(support)
    noise = (Noise(self.config, support, seed,
                   self.latent_samples(True, None if mask is None else support),
                   encoder=self.encoder is not None, latents=self.latent_space)
             if training else None)
    bias = None if mask is None else mask.logit_bias
    if samples > 1 and not training:
      latents = self.sample_latents(support, samples, seed, mask)          # [S, B, N, z]
      shape = tf.shape(latents)
      initial = tf.reshape(latents, [shape[0] * shape[1], shape[2], 1, shape[3]])
      support = tf.tile(support, [samples, 1, 1, 1])
      if mask is not None:
        mask, bias = mask.tile(samples), tf.tile(bias, [samples, 1])
      kl = tf.zeros([shape[0] * shape[1]])
      final, weights = self.adapt_latents(support, initial, training, mask=mask, bias=bias)
    elif self.latent_space:
      initial, kl = self.initial_latents(support, training, noise, mask)
      final, weights = self.adapt_latents(support, initial, training, noise, mask, bias)
    else:  # MAML: learned initial weights (and bias), no codes
      b = tf.shape(support)[0]
      weights = tf.tile(tf.convert_to_tensor(self.initial_weights)[None], [b, 1, 1])
      initial = final = tf.zeros([b, self.config.num_classes, 1, self.config.latent_size])
      kl = tf.zeros([b])
      if self.config.classifier_bias:
        learned = tf.tile(tf.convert_to_tensor(self.initial_bias)[None], [b, 1])
        bias = learned if bias is None else learned + bias
    weights, bias = self.finetune(support, weights, training, noise, bias, mask)
    return dict(weights=weights, bias=bias, initial_latents=initial, final_latents=final,
                kl=kl, noise=noise, mask=mask)

  def call(self, episode, training=False, seed=None):
    """Adapts on ``episode['support']`` (padded: ``episode['support_mask']``) and
    classifies ``episode['query']`` (``episode['query_mask']`` marks real queries).

    Returns per-task [B] tensors (query_loss, kl, encoder_penalty, accuracy) and the
    query logits [B, N, Q, N].
    """
    adapted = self.adapt(episode["support"], training, seed,
                         support_mask=episode.get("support_mask"))
    query = self._inputs(episode["query"])
    noise = adapted["noise"]
    logits = self.logits(query, adapted["weights"],
                         noise.query_keep(query) if noise is not None else None,
                         adapted["bias"])
    mask = episode.get("query_mask")
    if mask is None:
      mask = tf.ones(tf.shape(logits)[:3])
    support_mask = adapted["mask"]
    if support_mask is not None:  # no query of a padded class counts
      mask = mask * support_mask.classes[:, :, None]
    count = tf.reduce_sum(mask, axis=[1, 2])
    ce = self.cross_entropy(logits)
    moved = tf.square(tf.stop_gradient(adapted["final_latents"]) - adapted["initial_latents"])
    penalty = (tf.reduce_mean(moved, axis=[1, 2, 3]) if support_mask is None else
               masked_mean(moved, support_mask.codes(moved.shape[2])[..., None], [1, 2, 3]))
    return dict(query_loss=tf.reduce_sum(ce * mask, axis=[1, 2]) / count,
                kl=adapted["kl"], encoder_penalty=penalty,
                accuracy=episode_accuracy(logits, mask),
                logits=logits, initial_latents=adapted["initial_latents"],
                final_latents=adapted["final_latents"])

  # ------------------------------------------------------------------ regularisation

  def network_variables(self):
    """Weights of the encoder, relation network and decoder (not the learning rates)."""
    layers = [l for l in (self.encoder, self.decoder) if l is not None]
    return [v for l in layers for v in l.trainable_variables]

  def regularization(self) -> Dict[str, tf.Tensor]:
    """Weighted L2, orthogonality and paper-regulariser terms (scalars)."""
    c = self.config
    terms = {k: tf.constant(0.0) for k in ("l2", "orthogonality", "paper_regularizer")}
    if c.l2_weight:
      terms["l2"] = c.l2_weight * regularizers.l2_penalty(self.network_variables())
    if c.orthogonality_weight and self.decoder is not None:
      terms["orthogonality"] = c.orthogonality_weight * regularizers.orthogonality_penalty(
          tf.convert_to_tensor(self.decoder.kernels()[0]))
    if c.paper_regularizer_weight:
      kernels = [k for l in (self.encoder, self.decoder) if l is not None for k in l.kernels()]
      terms["paper_regularizer"] = c.paper_regularizer_weight * regularizers.paper_regularizer(
          [tf.convert_to_tensor(k) for k in kernels])
    return terms


def task_losses(outputs: Dict[str, tf.Tensor], config: LEOConfig) -> tf.Tensor:
  """Per-task objective [B]: query CE + beta * KL + gamma * encoder penalty."""
  return (outputs["query_loss"] + config.kl_weight * outputs["kl"] +
          config.encoder_penalty_weight * outputs["encoder_penalty"])


def build_leo(config: LEOConfig, dim: int) -> LEO:
  """Creates a LEO model and its variables (one dummy evaluation-mode pass)."""
  config.check_size(dim)  # before any weight exists
  model = LEO(config, dim)
  dummy = tf.zeros([1, config.num_classes, config.num_shots, dim])
  model(dict(support=dummy, query=dummy), training=False)
  return model
