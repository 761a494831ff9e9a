"""Behaviour of the LEO model: evaluation mode, sampling, gradients, regularisers."""

import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import meta_loss_and_gradients, random_episode
from leo_tf.leo import config as config_lib, regularizers
from leo_tf.leo.config import ConfigError, LEOConfig
from leo_tf.leo.layers import gaussian
from leo_tf.leo.model import build_leo, task_losses


_episode = random_episode


# Evaluation is deterministic with a zero KL: helpers.LEOVariantChecks, for every variant.
def test_evaluation_codes_are_the_posterior_means():
  model = build_leo(LEOConfig(num_shots=2, dropout_rate=0.5), dim=16)
  episode = _episode(k=2)
  a = model(episode, training=False)
  # Means, not samples: one code per class, equal to the posterior mean.
  assert a["initial_latents"].shape == (2, 5, 1, 64)
  params = model.encoder(episode["support"], training=False)
  np.testing.assert_allclose(a["initial_latents"].numpy()[:, :, 0],
                             gaussian(params, 0.0).loc.numpy(), rtol=1e-6)


def test_training_mode_samples_per_shot_and_depends_on_seed():
  model = build_leo(LEOConfig(num_shots=3), dim=16)
  episode = _episode(k=3)
  a = model(episode, training=True, seed=tf.constant([1, 2]))
  b = model(episode, training=True, seed=tf.constant([1, 2]))
  c = model(episode, training=True, seed=tf.constant([1, 3]))
  np.testing.assert_array_equal(a["logits"].numpy(), b["logits"].numpy())
  assert not np.allclose(a["logits"].numpy(), c["logits"].numpy())
  z = a["initial_latents"].numpy()
  assert z.shape == (2, 5, 3, 64) and not np.allclose(z[:, :, 0], z[:, :, 1])
  assert np.all(a["kl"].numpy() != 0.0)


def test_gradients_do_not_flow_into_input_embeddings():
  model = build_leo(LEOConfig(num_shots=2), dim=16)
  episode = _episode(k=2)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(episode["support"])
    tape.watch(episode["query"])
    loss = tf.reduce_mean(task_losses(model(episode, training=True, seed=[0, 1]),
                                      model.config))
  assert tape.gradient(loss, episode["support"]) is None
  assert tape.gradient(loss, episode["query"]) is None
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  assert {v.name for v in model.trainable_variables} >= {"inner_lr", "finetune_lr"}


# The relation network's and fused decode's fast forms: test_performance_paths.py.


def test_stddev_parameterisation():
  params = tf.constant([[0.5, np.log(0.25)], [0.0, 0.0]])          # (mean, u) rows
  d = gaussian(params, stddev_offset=0.0)
  # exp(u) - 1 is negative for u < 0: floored at 1e-10.
  np.testing.assert_allclose(d.scale.numpy().ravel(), [1e-10, 1e-10])
  d = gaussian(tf.constant([[0.5, np.log(3.0)]]), stddev_offset=0.5)
  np.testing.assert_allclose(d.scale.numpy().ravel(), [3.0 - 0.5], rtol=1e-6)


def test_orthogonality_penalty_by_hand():
  w = tf.constant([[1.0, 0.0], [1.0, 1.0]])
  # Row-normalised Gram: off-diagonal 1/sqrt(2); mean((C - I)^2) = 2 * 0.5 / 4.
  np.testing.assert_allclose(float(regularizers.orthogonality_penalty(w)), 0.25, rtol=1e-6)
  assert float(regularizers.orthogonality_penalty(tf.eye(3))) == pytest.approx(0.0)


def test_paper_regulariser_by_hand():
  w = tf.constant([[2.0, 0.0]])                   # [1, 2]: Gram on the short side = [[4]]
  # ||w||^2 = 4, |4 - 1| = 3
  assert float(regularizers.paper_regularizer([w])) == pytest.approx(7.0)


def test_l2_excludes_learning_rates():
  model = build_leo(LEOConfig(l2_weight=2.0, orthogonality_weight=0.0), dim=8)
  expected = sum(float(tf.reduce_sum(tf.square(v))) for v in model.network_variables())
  assert float(model.regularization()["l2"]) == pytest.approx(expected, rel=1e-5)
  names = {v.name for v in model.network_variables()}
  assert "inner_lr" not in names and "finetune_lr" not in names


# The paper's variants and ablations give finite meta-gradients: test_variants.py.
def test_first_order_gives_finite_meta_gradients():
  # 640-d as in real use: at small d the untrained decoder's exp(u) stddevs can overflow.
  model = build_leo(LEOConfig(num_shots=2, first_order=True), dim=640)
  _, loss, grads = meta_loss_and_gradients(model, _episode(k=2, d=640), True, [0, 1])
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)


def test_random_prior_starts_from_zero_at_evaluation():
  model = build_leo(LEOConfig(initialisation="random_prior", inner_steps_test=0), dim=16)
  out = model(_episode(), training=False)
  assert np.all(out["initial_latents"].numpy() == 0.0)
  assert model.encoder is None


def test_random_prior_sample_start_is_one_fixed_standard_normal_draw():
  model = build_leo(LEOConfig(initialisation="random_prior", prior_start="sample",
                              inner_steps_test=0), dim=16)
  z0 = model(_episode(), training=False)["initial_latents"].numpy()
  again = model(_episode(seed=1), training=False, seed=tf.constant([5, 6]))
  assert z0.shape == (2, 5, 1, 64)
  np.testing.assert_array_equal(z0, again["initial_latents"].numpy())  # fixed, not seeded
  assert abs(z0.mean()) < 0.1 and abs(z0.std() - 1.0) < 0.1  # 640 draws of N(0, 1)
  assert len(np.unique(z0)) == z0.size  # every class its own code


@pytest.mark.parametrize("start, moves", [("mean", False), ("sample", True)])
def test_random_prior_through_a_relu_decoder_adapts_only_from_a_draw(start, moves):
  """At z = 0 a ReLU decoder without biases has a zero gradient: the codes cannot move."""
  config = LEOConfig(initialisation="random_prior", decoder_hidden=(32,), num_shots=2,
                     prior_start=start)
  model = build_leo(config, dim=16)
  support = _episode(k=2)["support"]
  initial, _ = model.initial_latents(support, training=False, noise=None)
  final, _ = model.adapt_latents(support, initial, training=False)
  assert (float(tf.reduce_max(tf.abs(final - initial))) > 1e-4) == moves


@pytest.mark.parametrize("bad, message", [
    (dict(num_classes=1), "num_classes"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(initialisation="vae"), "initialisation"),
    (dict(prior_start="median"), "prior_start"),
    (dict(inner_steps_test=-1), "inner_steps_test"),
    (dict(kl_weight=-1.0), "kl_weight"),
])
def test_bad_config_values_are_rejected(bad, message):
  with pytest.raises(ConfigError, match=message):
    LEOConfig(**bad)


EIGHT_GB = 8 * 2**30


def test_a_model_too_big_for_the_machine_is_refused_by_its_config(monkeypatch):
  monkeypatch.setattr(config_lib, "MACHINE_MEMORY", EIGHT_GB)
  # At d = 1 (a lower bound): relation 128*1e5 + 1e5*1e5 + 1e5*128, encoder 1*64, decoder
  # 64*2, step sizes 64 + 1: 10,025,600,257 weights, 16 bytes each = 149.4 GB.
  line = ("LEOConfig.relation_hidden = (100000, 100000) makes a model of 1e+10 weights: "
          "meta-training needs 149.4 GB for them (weights, gradients, Adam's moments), more "
          "than 50% of this machine's 8.0 GB; use smaller sizes")
  with pytest.raises(ConfigError, match="^" + re.escape(line)):
    LEOConfig(relation_hidden=[100000, 100000])
  with pytest.raises(ConfigError, match=r"^LEOConfig.latent_size = 1000000000 makes a model "
                     r"of 5.16e\+11 weights"):
    LEOConfig(latent_size=1000000000)


def test_a_model_too_big_for_its_embeddings_is_refused_before_it_is_built(monkeypatch):
  monkeypatch.setattr(config_lib, "MACHINE_MEMORY", EIGHT_GB)
  config = LEOConfig(decoder_hidden=(10**6,))          # 1 GB at d = 1: accepted
  # At d = 640 the decoder alone is 64 * 1e6 + 1e6 * 1280 weights: 20 GB.
  with pytest.raises(ConfigError, match=r"^LEOConfig.decoder_hidden = \(1000000,\) makes "
                     r"a model of 1.34e\+09 weights: meta-training needs 20.0 GB"):
    build_leo(config, dim=640)
