"""Test-time ensembles over latent samples (the paper's suggested future work).

Evaluation normally adapts the posterior mean of each class's code once. An ensemble
draws S codes per class from the encoder's posterior q(z | D_train) (from N(0, I) for
the random-prior ablation), adapts and fine-tunes each of the S classifiers on the
support set as usual (evaluation mode: mean decoded weights, no dropout), and averages
their query probabilities. Samples are folded into the task axis ([S*B, ...]) so the
model's own vectorised inner loop runs unchanged; queries are never copied S times. The
adaptation is ``LEO.adapt(samples=S)``, whose draws come from ``leo.noise``.

Models without a latent distribution to sample from (MAML, or the deterministic
ablation whose stddev was never trained) have no ensemble (methods.ensemble_method).
"""

import tensorflow as tf

from leo_tf.leo.model import LEO


def can_ensemble(model: LEO) -> bool:
  return model.config.stochastic and model.latent_space


def ensemble_logits(model: LEO, support: tf.Tensor, query: tf.Tensor, num_samples: int,
                    seed, support_mask=None) -> tf.Tensor:
  """Log of the mean query probability over S adapted samples: [B, N, Q, N] (a padded
  support set: with its ``support_mask``, see LEO.adapt), for a model that can_ensemble
  (methods.ensemble_method checks).

  Returned as log-probabilities so callers can treat them as logits (softmax of them
  gives back the averaged probabilities).
  """
  support = tf.convert_to_tensor(support)
  query = tf.convert_to_tensor(query)
  adapted = model.adapt(support, training=False, seed=seed, samples=num_samples,
                        support_mask=support_mask)
  b, n = tf.shape(support)[0], tf.shape(support)[1]
  weights = tf.reshape(adapted["weights"], [num_samples, b, n, -1])    # [S, B, N, d]
  logits = tf.einsum("bnqd,sbcd->sbnqc", query, weights)
  if adapted["bias"] is not None:  # a padded class's LOGIT_PADDING
    logits += tf.reshape(adapted["bias"], [num_samples, b, 1, 1, n])
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(float(num_samples))
