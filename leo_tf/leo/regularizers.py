"""Regularisers on the encoder and decoder weights."""

from typing import Sequence

import tensorflow as tf


def l2_penalty(variables: Sequence[tf.Variable]) -> tf.Tensor:
  """0.5 * sum of squared weights (tf.nn.l2_loss summed), as the final code does."""
  if not variables:
    return tf.constant(0.0)
  return tf.add_n([tf.nn.l2_loss(v) for v in variables])


def orthogonality_penalty(kernel: tf.Tensor) -> tf.Tensor:
  """mean((C - I)^2) with C the row-normalised W W^T of a [rows, cols] kernel."""
  gram = tf.matmul(kernel, kernel, transpose_b=True)
  norms = tf.norm(kernel, axis=1, keepdims=True) + 1e-32
  correlation = gram / tf.matmul(norms, norms, transpose_b=True)
  identity = tf.eye(tf.shape(kernel)[0], dtype=kernel.dtype)
  return tf.reduce_mean(tf.square(correlation - identity))


def paper_regularizer(kernels: Sequence[tf.Tensor]) -> tf.Tensor:
  """The paper's R: sum over kernels of ||W||_2^2 + ||G - I||_1.

  G is the Gram matrix on the kernel's smaller side (phi_e^T phi_e for the encoder's
  [d, 2z] kernel, phi_d phi_d^T for the decoder's [z, 2d] one), applied layer-wise.
  """
  total = tf.constant(0.0)
  for w in kernels:
    rows, cols = int(w.shape[0]), int(w.shape[1])
    gram = (tf.matmul(w, w, transpose_a=True) if cols <= rows
            else tf.matmul(w, w, transpose_b=True))
    identity = tf.eye(min(rows, cols), dtype=w.dtype)
    total += tf.reduce_sum(tf.square(w)) + tf.reduce_sum(tf.abs(gram - identity))
  return total
