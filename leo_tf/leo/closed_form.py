"""The inner loops with their gradients written out in closed form.

The inner objective is the summed softmax cross-entropy of the support set under a
linear classifier, so its gradients are short formulas:

  logits  = X W^T                       X [B, NK, d] (dropped out), W [B, N, d]
  dL/dW   = (softmax(logits) - Y)^T X   Y: one-hot labels, class-major
  w       = mean_s(z_s) D_mu + mean_s(sigma(z_s D_s) * eps_s)      (linear decoder)
  dL/dz_s = (1/S) [dL/dW D_mu^T + (dL/dW * sigma'(z_s D_s) * eps_s) D_s^T]

with sigma(u) = max(exp(u) - (1 - offset), 1e-10), whose derivative is exp(u) where the
floor is not active (TF's Maximum sends ties to its first argument; so do we).

Written this way a latent step is ~20 graph ops instead of the ~60 that
``tf.GradientTape`` records for the same gradient, and the outer (second-order) backward
pass shrinks with it: meta-training is bound by op dispatch on CPU (docs/performance.md).
The outer GradientTape still differentiates through everything here, so the
meta-gradient is exact. ``tests/test_closed_form.py`` pins outputs and meta-gradients to
the GradientTape loop (``LEOConfig.inner_gradients="tape"``) under a fixed seed.

Layout: codes are kept as 2-D [B*N*S, latent] and weights as [B, N, d] so every product
is one MatMul / BatchMatMul without reshapes or transposes around it.
"""

from typing import Optional, Sequence

import tensorflow as tf

from leo_tf.leo.layers import MIN_STDDEV


def class_targets(support: tf.Tensor) -> tf.Tensor:
  """One-hot labels [N*K, N] of a class-major support set [B, N, K, d]."""
  shape = tf.shape(support)
  return tf.repeat(tf.eye(shape[1]), shape[2], axis=0)


def weight_gradient(x: tf.Tensor, weights: tf.Tensor, targets: tf.Tensor,
                    bias: Optional[tf.Tensor] = None) -> tf.Tensor:
  """d(summed CE)/dW [B, N, d] for x [B, M, d], weights [B, N, d], targets [M, N] and a
  constant logit bias [B, N] (a padded episode's: padded classes get no probability, and
  its padded examples are zero rows of x, which add nothing)."""
  logits = tf.linalg.matmul(x, weights, transpose_b=True)               # [B, M, N]
  if bias is not None:
    logits += bias[:, None, :]
  return tf.linalg.matmul(tf.nn.softmax(logits) - targets, x, transpose_a=True)


class LinearDecoding:
  """Decodes 2-D codes [B*N*S, latent] through a linear decoder kernel [latent, 2d].

  ``__call__`` returns the (sampled) weights [B, N, d] averaged over the S samples and
  keeps what ``latent_gradient`` needs (the stddev slope times the noise).
  """

  def __init__(self, kernel: tf.Tensor, offset: float, latents: tf.Tensor,
               code_mask: Optional[tf.Tensor] = None):
    """``kernel`` [latent, 2d]; ``latents`` [B, N, S, latent] has the shape of the codes;
    ``code_mask`` [B, N, S] marks a padded episode's real codes (the mean is theirs)."""
    # split, not slicing: the backward of a split is one concat, of each slice a
    # zero-padded full-size kernel gradient.
    self.mean_kernel, self.scale_kernel = tf.split(kernel, 2, axis=1)
    self.dim, self.offset, self.samples = kernel.shape[1] // 2, offset, latents.shape[2]
    shape = tf.shape(latents)
    self.batch, self.classes = shape[0], shape[1]
    self.code_mask = None
    if code_mask is not None and self.samples > 1:
      self.code_mask = tf.reshape(code_mask, [-1, self.samples, 1])
      self.code_counts = tf.maximum(tf.reduce_sum(self.code_mask, axis=1), 1.0)

  def _per_class(self, x):
    """[B*N*S, k] -> [B*N, k], the mean over a class's S samples (they are adjacent)."""
    if self.samples == 1:
      return x
    x = tf.reshape(x, [-1, self.samples, x.shape[-1]])
    if self.code_mask is None:
      return tf.reduce_mean(x, axis=1)
    return tf.reduce_sum(x * self.code_mask, axis=1) / self.code_counts

  def __call__(self, codes: tf.Tensor, noise: Optional[tf.Tensor]):
    """codes [B*N*S, latent], noise [B, N, S, d] or None (means only) -> W [B, N, d].

    Every product is a 2-D MatMul: a batched product with the shared kernel would
    broadcast, and its kernel gradient would be B separate products plus a sum.
    """
    weights = tf.linalg.matmul(self._per_class(codes), self.mean_kernel)  # linear: mean first
    self._slope_noise = None
    if noise is not None:
      unnormalised = tf.linalg.matmul(codes, self.scale_kernel)           # [B*N*S, d]
      exp = tf.exp(unnormalised)
      shifted = exp - (1.0 - self.offset)
      scale = tf.maximum(shifted, MIN_STDDEV)
      noise = tf.reshape(noise, tf.shape(unnormalised))
      self._slope_noise = tf.where(shifted >= MIN_STDDEV, exp, 0.0) * noise
      weights = weights + self._per_class(scale * noise)
    return tf.reshape(weights, [self.batch, self.classes, self.dim])

  def latent_gradient(self, weight_grad: tf.Tensor) -> tf.Tensor:
    """dL/dz [B*N*S, latent] from dL/dW [B, N, d] for the last decoded codes, times S.

    (The 1/S of the average is left out: the caller's step size carries S / K. With a
    code mask it is S_n, the class's real codes, and the caller's step zero for the
    padded ones.)
    """
    flat = tf.reshape(weight_grad, [-1, self.dim])                       # [B*N, d]
    through_mean = tf.linalg.matmul(flat, self.mean_kernel, transpose_b=True)
    if self.samples > 1:
      through_mean = tf.repeat(through_mean, self.samples, axis=0)
    if self._slope_noise is None:
      return through_mean
    per_sample = flat if self.samples == 1 else tf.repeat(flat, self.samples, axis=0)
    return through_mean + tf.linalg.matmul(per_sample * self._slope_noise,
                                           self.scale_kernel, transpose_b=True)


def adapt_latents(decoding: LinearDecoding, latents: tf.Tensor, support: tf.Tensor, *,
                  keeps: Sequence[Optional[tf.Tensor]],
                  decode_noise: Sequence[Optional[tf.Tensor]], step_size: tf.Tensor,
                  first_order: bool, dropout_rate: float, bias: Optional[tf.Tensor] = None):
  """Latent gradient steps from ``latents`` [B, N, S, latent] (``decoding`` made for
  them); returns the final codes [B, N, S, latent] and weights [B, N, d].

  ``step_size`` is the per-dimension step for one code's gradient times S (lr / K), or
  per code [B*N*S, latent] in a padded episode; ``keeps[t]`` the dropout decisions and
  ``decode_noise[t]`` the weight noise of step t (``decode_noise[-1]`` for the final
  decode); ``bias`` a constant logit bias [B, N] (weight_gradient).
  """
  inputs, targets = _SupportInputs(support, dropout_rate), class_targets(support)
  codes = tf.reshape(latents, [-1, latents.shape[3]])
  for keep, noise in zip(keeps, decode_noise):
    weights = decoding(codes, noise)
    grad = decoding.latent_gradient(weight_gradient(inputs(keep), weights, targets, bias))
    codes = codes - step_size * (tf.stop_gradient(grad) if first_order else grad)
  weights = decoding(codes, decode_noise[-1])
  return tf.reshape(codes, tf.shape(latents)), weights


def finetune(weights: tf.Tensor, support: tf.Tensor, *,
             keeps: Sequence[Optional[tf.Tensor]], step_size: tf.Tensor, first_order: bool,
             dropout_rate: float, bias: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Gradient steps on the classifier weights [B, N, d]; ``keeps[t]`` and ``bias`` as
  above; ``step_size`` [d], or [B, N, d] in a padded episode."""
  inputs, targets = _SupportInputs(support, dropout_rate), class_targets(support)
  for keep in keeps:
    grad = weight_gradient(inputs(keep), weights, targets, bias)
    weights = weights - step_size * (tf.stop_gradient(grad) if first_order else grad)
  return weights


class _SupportInputs:
  """The support set as x [B, N*K, d], with each step's dropout decisions applied.

  The scaled copy and the zeros are made once per loop, so a step's dropout is a
  single select.
  """

  def __init__(self, support: tf.Tensor, rate: float):
    shape = tf.shape(support)
    self.x = tf.reshape(support, [shape[0], shape[1] * shape[2], support.shape[-1]])
    self.rate = rate
    self._scaled = self._zeros = None

  def __call__(self, keep: Optional[tf.Tensor]) -> tf.Tensor:
    if keep is None:
      return self.x
    if self._scaled is None:
      self._scaled = self.x * (1.0 / (1.0 - self.rate))
      self._zeros = tf.zeros_like(self.x)
    return tf.where(tf.reshape(keep, tf.shape(self.x)), self._scaled, self._zeros)
