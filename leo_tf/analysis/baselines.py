"""Baselines that need no meta-training, batched over episodes like the LEO model.

Episodes are [B, N, K, d] support and [B, N, Q, d] query tensors (class n has label n),
padded ones with a support mask [B, N, K] (leo/masks.py: only real shots count, padded
classes get masks.LOGIT_PADDING); every function returns query logits [B, N, Q, N].

- Nearest class mean: logits = -||q - mean of class n's shots||^2 / T. Distances are not
  probabilities; the temperature T defines them and is fitted on validation episodes
  (:func:`fit_temperature`), which changes NLL and ECE but never the accuracy.
- Logistic regression: multinomial, with a bias, fitted on each episode's support set.
  The objective is sklearn's LogisticRegression(C): mean CE + ||W||^2 / (2 C n) (bias
  not penalised), minimised by Nesterov-accelerated gradient descent with step 1/L, run
  for all B episodes at once. Thousands of episodes take seconds, where a per-episode
  sklearn fit would take minutes.
"""

import numpy as np
import tensorflow as tf

from leo_tf.leo.masks import SupportMask


def ncm_logits(support: tf.Tensor, query: tf.Tensor, temperature=1.0,
               support_mask=None) -> tf.Tensor:
  """Nearest class mean (prototype) logits: negative squared distance / temperature."""
  mask = None if support_mask is None else SupportMask(support_mask)
  prototypes = (tf.reduce_mean(support, axis=2) if mask is None
                else mask.class_mean(mask.zero_padding(support)))      # [B, N, d]
  diff = query[:, :, :, None, :] - prototypes[:, None, None, :, :]     # [B, N, Q, N, d]
  logits = -tf.reduce_sum(tf.square(diff), axis=-1) / temperature
  return logits if mask is None else logits + mask.logit_bias[:, None, None, :]


def _flatten_support(support: tf.Tensor, support_mask=None):
  """[B, N, K, d] -> inputs with a bias column [B, N*K, d+1] and one-hot labels [B, N*K, N]
  (a padded example's row and label are zeros)."""
  b, n, k = tf.shape(support)[0], tf.shape(support)[1], tf.shape(support)[2]
  x = tf.reshape(support, [b, n * k, -1])
  x = tf.concat([x, tf.ones([b, n * k, 1], x.dtype)], axis=-1)
  labels = tf.repeat(tf.range(n), k)
  y = tf.broadcast_to(tf.one_hot(labels, n, dtype=x.dtype)[None], [b, n * k, n])
  if support_mask is None:
    return x, y
  real = tf.reshape(tf.cast(support_mask, x.dtype), [b, n * k, 1])
  return tf.where(real > 0, x, 0.0), y * real


@tf.function(reduce_retracing=True)  # the solver loop is far too slow run eagerly
def fit_logistic_regression(support: tf.Tensor, c: float = 1.0, steps: int = 300,
                            support_mask=None) -> tf.Tensor:
  """Weights [B, N, d+1] (last column the bias) of per-episode multinomial LR; a padded
  class's are zeros."""
  x, y = _flatten_support(tf.convert_to_tensor(support, tf.float32), support_mask)
  c = tf.cast(c, tf.float32)
  padding = 0.0
  if support_mask is None:
    n_examples = tf.cast(tf.shape(x)[1], tf.float32)
  else:  # per episode [B, 1, 1]
    mask = SupportMask(support_mask)
    n_examples = mask.examples_per_task()[:, :, None]
    padding = mask.logit_bias[:, None, :]
  l2 = 1.0 / (c * n_examples)
  penalised = tf.concat([tf.ones([tf.shape(x)[2] - 1]), [0.0]], axis=0)  # not the bias
  # Softmax CE has Hessian <= 1/2 in the logits, so the mean loss is
  # (max ||x||^2 / 2 + l2)-smooth; the penalty makes it l2-strongly convex in W.
  smooth = (0.5 * tf.reduce_max(tf.reduce_sum(tf.square(x), -1), axis=1)[:, None, None]
            + l2)                                                        # [B, 1, 1]
  kappa = smooth / l2
  momentum = (tf.sqrt(kappa) - 1) / (tf.sqrt(kappa) + 1)
  step = 1.0 / smooth

  def gradient(w):
    p = tf.nn.softmax(tf.einsum("bmd,bnd->bmn", x, w) + padding)
    return tf.einsum("bmn,bmd->bnd", p - y, x) / n_examples + l2 * w * penalised

  w = tf.zeros([tf.shape(x)[0], tf.shape(y)[2], tf.shape(x)[2]])
  previous = w
  for _ in tf.range(steps):
    look_ahead = w + momentum * (w - previous)
    previous, w = w, look_ahead - step * gradient(look_ahead)
  return w


def logistic_regression_logits(support: tf.Tensor, query: tf.Tensor, c: float = 1.0,
                               steps: int = 300, support_mask=None) -> tf.Tensor:
  w = fit_logistic_regression(support, c, steps, support_mask)
  logits = tf.einsum("bnqd,bcd->bnqc", query, w[..., :-1]) + w[:, None, None, :, -1]
  if support_mask is None:
    return logits
  return logits + SupportMask(support_mask).logit_bias[:, None, None, :]


def fit_temperature(logits: np.ndarray, mask: np.ndarray,
                    grid=np.logspace(-3, 2, 101)) -> float:
  """The temperature on ``grid`` minimising the NLL of the queries ``mask`` [B, N, Q]
  marks, of logits [B, N, Q, N] (the first such temperature if several tie)."""
  logits, mask = np.asarray(logits, np.float64), np.asarray(mask, np.float64)
  true = np.einsum("bnqn->bnq", logits)  # query [b, n, q] is of class n
  nll = [float(((np.logaddexp.reduce(logits / t, axis=-1) - true / t) * mask).sum())
         for t in grid]
  return float(grid[int(np.argmin(nll))])
