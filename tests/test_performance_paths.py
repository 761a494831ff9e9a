"""The optimised paths compute what their straightforward forms compute.

Each test builds the literal form next to the fast one and compares outputs and
gradients under fixed seeds, so a speed-up can never silently change the numerics.
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import random_episode, tiny_leo
from leo_tf.leo.layers import RelationNetwork, gaussian
from leo_tf.leo.model import build_leo, task_losses

DIM = 16


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("hidden", [(), (12,), (12, 12)])
def test_relation_network_matches_pairwise_reference(hidden):
  relation = RelationNetwork(hidden + (10,))
  codes = tf.random.stateless_normal([3, 6, 5], seed=[1, 2])
  relation(codes)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(codes)
    fast, literal = relation(codes), relation.pairwise_reference(codes)
  _close(fast, literal)
  for source in [codes] + relation.kernels:
    _close(tape.gradient(fast, source), tape.gradient(literal, source))


def _model(shots, **overrides):
  config = tiny_leo(num_shots=shots, inner_steps_train=2, finetune_steps_train=2,
                    inner_steps_test=2, finetune_steps_test=2, **overrides)
  return build_leo(config, DIM)


def test_fused_decode_equals_per_sample_weights_averaged_in_logits():
  """The authors average the logits of a class's S weight samples; the model decodes the
  mean weight vector once (linear decoder) and classifies with it."""
  model = _model(shots=4)
  latents = tf.random.stateless_normal([2, 3, 4, 4], seed=[3, 4])
  x = tf.random.stateless_normal([2, 3, 5, DIM], seed=[5, 6])
  noise = tf.random.stateless_normal([2, 3, 4, DIM], seed=[7, 8])
  kernel = model.decoder.kernels()[0]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(latents)
    fused = model.logits(x, model.decode(latents, noise))
    # Literal: a full Gaussian per sample s, weights sampled, one logit tensor per s.
    weights = gaussian(model.decoder(latents), model.config.weight_offset(DIM))
    per_sample = tf.einsum("bnmd,bcsd->bnmcs", x, weights.loc + weights.scale * noise)
    literal = tf.reduce_mean(per_sample, axis=-1)
  _close(fused, literal)
  for source in (latents, kernel):
    _close(tape.gradient(fused, source), tape.gradient(literal, source))
  _close(model.decode(latents), model.decode_reference(latents))


def _episode(shots, queries=4, tasks=2, seed=0):
  return random_episode(tasks, 3, shots, queries, DIM, seed, unit=False, joint=False)


def _loss_and_grads(model, episode, seed):
  with tf.GradientTape() as tape:
    outputs = model(episode, training=True, seed=seed)
    loss = tf.reduce_mean(task_losses(outputs, model.config))
  return loss, tape.gradient(loss, model.trainable_variables)


def test_xla_step_matches_graph_step():
  # Deterministic mode: XLA's Philox kernels draw other numbers than TF's CPU kernels
  # for the same stateless seed, so only the random-free computation can be pinned.
  model = _model(shots=2, stochastic=False, dropout_rate=0.0)
  episode, seed = _episode(2), tf.constant([11, 12], tf.int64)
  graph = tf.function(_loss_and_grads)
  xla = tf.function(_loss_and_grads, jit_compile=True)
  loss, grads = graph(model, episode, seed)
  xla_loss, xla_grads = xla(model, episode, seed)
  _close(loss, xla_loss, 1e-4)
  for g, x in zip(grads, xla_grads):
    _close(g, x, 1e-4)


def test_class_block_evaluation_matches_simple_path():
  from helpers import synthetic_embeddings
  from leo_tf.data.episodes import EpisodeSampler
  from leo_tf.leo import evaluation
  data = synthetic_embeddings(7, 9, dim=DIM, seed=3)       # 7 classes, 9 examples each
  drop = np.isin(np.arange(len(data.class_ids)), [4, 5, 20])  # uneven class sizes
  data = type(data)(data.embeddings[~drop], data.class_ids[~drop], data.class_names,
                    data.keys[~drop])
  model = _model(shots=2)
  sampler = EpisodeSampler(data, 3, 2, None)
  simple = evaluation.episode_accuracies(evaluation.simple_predictor(model), sampler,
                                         40, 8, seed=5)
  fast = evaluation.evaluate(model, sampler, 40, 8, seed=5).accuracies
  assert simple.std() > 0.01                               # a non-trivial comparison
  _close(fast, simple, 1e-6)
  batch = next(iter(sampler.support_dataset(8, 5)))
  full = next(iter(sampler.dataset(8, 5)))
  _close(batch["support"], full["support"], 0)
