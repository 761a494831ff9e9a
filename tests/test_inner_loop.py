"""The latent inner loop and fine-tuning against numbers computed by hand, and the
second-order meta-gradient against finite differences."""

import math

import numpy as np
import tensorflow as tf

from helpers import hand_set_linear_leo, random_episode
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.model import build_leo, task_losses


def _tiny_linear_model(inner_steps=1, finetune_steps=0):
  """helpers.hand_set_linear_leo, 1-shot, evaluation mode; support e0 (z0 = 1), e1 (z1 = -1)."""
  model = hand_set_linear_leo(num_shots=1, inner_steps_test=inner_steps,
                              finetune_steps_test=finetune_steps, inner_lr_init=0.5,
                              finetune_lr_init=0.1)
  support = tf.constant([[[[1.0, 0.0]], [[0.0, 1.0]]]])            # [B=1, N=2, K=1, d=2]
  return model, support


def test_one_latent_step_by_hand():
  model, support = _tiny_linear_model(inner_steps=1)
  out = model.adapt(support, training=False)
  # Both support points have x.a = 1, so logits are (z0, z1) = (1, -1) for each; with
  # p = softmax(1, -1): dL/dz0 = (p0 - 1) + p0 = 2 p0 - 1 = tanh(1), dL/dz1 = -tanh(1).
  step = 0.5 * math.tanh(1.0)
  np.testing.assert_allclose(out["initial_latents"].numpy().ravel(), [1.0, -1.0], rtol=1e-6)
  np.testing.assert_allclose(out["final_latents"].numpy().ravel(), [1 - step, -1 + step],
                             rtol=1e-6)
  np.testing.assert_allclose(out["weights"].numpy()[0],
                             [[1 - step, 1 - step], [-1 + step, -1 + step]], rtol=1e-6)
  assert float(out["kl"][0]) == 0.0


def test_two_latent_steps_and_finetuning_by_hand():
  model, support = _tiny_linear_model(inner_steps=2, finetune_steps=1)
  out = model.adapt(support, training=False)
  z = 1.0
  for _ in range(2):  # symmetric codes (z, -z): logits (z, -z), gradient tanh(z)
    z -= 0.5 * math.tanh(z)
  w = np.array([[z, z], [-z, -z]])
  x = np.eye(2)
  logits = x @ w.T                                                      # [n, c]
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  grad_w = (p - np.eye(2)).T @ x                                        # sum over n
  w_final = w - 0.1 * grad_w                                           # K = 1
  np.testing.assert_allclose(out["final_latents"].numpy().ravel(), [z, -z], rtol=1e-6)
  np.testing.assert_allclose(out["weights"].numpy()[0], w_final, rtol=1e-5)


def _fd_config(first_order=False):
  # Smooth everywhere (no ReLU kink: a linear relation network) and no encoder penalty,
  # whose stop_gradient is deliberately not what finite differences measure.
  return LEOConfig(num_classes=3, num_shots=2, latent_size=3, relation_hidden=(),
                   decoder_hidden=(), stochastic=False, dropout_rate=0.0,
                   inner_steps_train=2, finetune_steps_train=2, inner_lr_init=0.7,
                   finetune_lr_init=0.3, first_order=first_order, kl_weight=0.1,
                   encoder_penalty_weight=0.0, l2_weight=1e-3, orthogonality_weight=0.1)


def _meta_loss(model, episode):
  out = model(episode, training=True, seed=tf.constant([3, 4]))
  return (tf.reduce_mean(task_losses(out, model.config)) +
          tf.add_n(list(model.regularization().values())))


def _episode(dim=6):
  return random_episode(2, 3, 2, 3, dim)


def _directional(model, episode, direction, eps=1e-2):
  """Central finite difference of the meta-loss along ``direction``."""
  values = []
  originals = [v.numpy() for v in model.trainable_variables]
  for sign in (1.0, -1.0):
    for v, o, d in zip(model.trainable_variables, originals, direction):
      v.assign(o + sign * eps * d)
    values.append(float(_meta_loss(model, episode)))
  for v, o in zip(model.trainable_variables, originals):
    v.assign(o)
  return (values[0] - values[1]) / (2 * eps)


def test_second_order_meta_gradient_matches_finite_differences():
  tf.keras.utils.set_random_seed(0)
  episode = _episode()
  model = build_leo(_fd_config(), dim=6)
  first_order = build_leo(_fd_config(first_order=True), dim=6)
  for a, b in zip(first_order.trainable_variables, model.trainable_variables):
    a.assign(b)
  rng = np.random.default_rng(1)
  with tf.GradientTape() as tape:
    loss = _meta_loss(model, episode)
  grads = tape.gradient(loss, model.trainable_variables)
  with tf.GradientTape() as tape:
    loss_fo = _meta_loss(first_order, episode)
  grads_fo = tape.gradient(loss_fo, first_order.trainable_variables)
  assert abs(float(loss) - float(loss_fo)) < 1e-6  # same forward pass
  second_errors, first_errors = [], []
  for _ in range(4):
    direction = [rng.normal(size=v.shape).astype(np.float32) for v in model.trainable_variables]
    fd = _directional(model, episode, direction)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    analytic_fo = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads_fo, direction))
    second_errors.append(abs(analytic - fd) / max(abs(fd), 1e-3))
    first_errors.append(abs(analytic_fo - fd) / max(abs(fd), 1e-3))
  assert max(second_errors) < 2e-2, second_errors
  # The check has teeth: dropping second-order terms is visibly wrong.
  assert max(first_errors) > 5 * max(second_errors), (first_errors, second_errors)
