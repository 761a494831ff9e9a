"""The protocol around the model as the authors ran it, and the paper's variant as
published: the Adam epsilon and the non-finite-step guard, train + val with selection,
the paper's one-code-per-class step, MAML in its original form. Step values by hand."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import (ONE_STEP, TINY_5WAY, gin_bindings, hand_set_linear_leo,
                     synthetic_embeddings, tiny_leo)
from leo_tf import gin_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo import evaluation
from leo_tf.leo.config import ConfigError, LEOConfig, TrainConfig
from leo_tf.leo.model import build_leo
from leo_tf.leo.trainer import MetaTrainer
from leo_tf.runtime.rundir import RunDir


# ------------------------------------------------------------------ the paper's step

def _two_way_two_shot(latent_codes, inner_gradients, training=False):
  """helpers.hand_set_linear_leo, 2-shot, one latent step: both shots of class 0 are e0
  (z0 = 1), both of class 1 are e1 (z1 = -1)."""
  model = hand_set_linear_leo(num_shots=2, inner_steps_test=1, inner_steps_train=1,
                              finetune_steps_test=0, finetune_steps_train=0,
                              inner_lr_init=0.5, latent_codes=latent_codes,
                              inner_gradients=inner_gradients)
  support = tf.constant([[[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2]])     # [1, 2, 2, 2]
  return model.adapt(support, training=training)


@pytest.mark.parametrize("inner_gradients", ["closed_form", "tape"])
def test_paper_step_is_alpha_times_the_summed_gradient_of_one_code(inner_gradients):
  # Every support point has x.a = 1: logits (z0, z1) = (1, -1); each of the 4 points adds
  # tanh(1) to dL/dz0 in magnitude (p0 - 1 + p0 for class 0, p0 for class 1 ...), so the
  # summed loss has dL/dz0 = 2 tanh(1) and z0' = 1 - alpha * 2 tanh(1).
  out = _two_way_two_shot("per_class", inner_gradients)
  step = 0.5 * 2 * math.tanh(1.0)
  np.testing.assert_allclose(out["final_latents"].numpy().ravel(), [1 - step, -1 + step],
                             rtol=1e-6)


@pytest.mark.parametrize("inner_gradients", ["closed_form", "tape"])
def test_final_code_step_is_one_kth_of_the_paper_step(inner_gradients):
  out = _two_way_two_shot("per_shot", inner_gradients)
  step = 0.5 * 2 * math.tanh(1.0) / 2                    # alpha / K on the same gradient
  np.testing.assert_allclose(out["final_latents"].numpy().ravel(), [1 - step, -1 + step],
                             rtol=1e-6)


def test_paper_variant_draws_one_code_per_class_in_training():
  config = LEOConfig(num_shots=5, latent_codes="per_class", use_relation_net=False,
                     latent_size=4)
  model = build_leo(config, dim=8)
  x = tf.random.stateless_normal([2, 5, 5, 8], seed=[0, 1])
  out = model(dict(support=x, query=x), training=True, seed=[1, 2])
  assert out["initial_latents"].shape == (2, 5, 1, 4)
  per_shot = build_leo(LEOConfig(num_shots=5, use_relation_net=False, latent_size=4), dim=8)
  assert per_shot(dict(support=x, query=x), training=True,
                  seed=[1, 2])["initial_latents"].shape == (2, 5, 5, 4)


# ------------------------------------------------------------------ MAML, original form

def _maml_original(**kw):
  return LEOConfig(**{**dict(num_classes=2, num_shots=1, initialisation="maml",
                             classifier_bias=True, inner_loss="mean",
                             learn_finetune_lr=False, finetune_lr_init=0.01,
                             dropout_rate=0.0), **kw})


def test_maml_original_steps_weights_and_bias_on_the_mean_loss():
  model = build_leo(_maml_original(finetune_steps_test=2), dim=2)
  w0, b0 = np.array([[0.5, -0.2], [0.1, 0.3]]), np.array([0.4, -0.1])
  model.initial_weights.assign(w0)
  model.initial_bias.assign(b0)
  x = np.array([[1.0, 0.0], [0.6, 0.8]])                 # class 0's shot, class 1's shot
  w, b, y = w0.copy(), b0.copy(), np.eye(2)
  for _ in range(2):
    logits = x @ w.T + b
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    w -= 0.01 * (p - y).T @ x / 2                        # mean over the N*K = 2 examples
    b -= 0.01 * (p - y).sum(0) / 2
  out = model.adapt(tf.constant(x[None, :, None], tf.float32), training=False)
  np.testing.assert_allclose(out["weights"].numpy()[0], w, rtol=1e-6)
  np.testing.assert_allclose(out["bias"].numpy()[0], b, rtol=1e-6)


def test_class_block_evaluation_adds_the_bias_like_the_simple_path():
  data = synthetic_embeddings(7, 9, dim=16, seed=3)
  model = build_leo(_maml_original(finetune_steps_test=3, num_shots=2), dim=16)
  model.initial_bias.assign([2.0, -1.0])                 # large enough to flip predictions
  model.initial_weights.assign(tf.random.stateless_normal([2, 16], seed=[4, 5]))
  sampler = EpisodeSampler(data, 2, 2, None)
  simple = evaluation.episode_accuracies(evaluation.simple_predictor(model), sampler,
                                         40, 8, seed=5)
  fast = evaluation.evaluate(model, sampler, 40, 8, seed=5).accuracies
  assert simple.std() > 0.01
  np.testing.assert_allclose(fast, simple, atol=1e-6)


def test_bias_needs_maml_and_a_fixed_step():
  with pytest.raises(ConfigError, match="classifier_bias"):
    LEOConfig(classifier_bias=True)
  with pytest.raises(ConfigError, match="classifier_bias"):
    LEOConfig(classifier_bias=True, initialisation="maml", learn_finetune_lr=True)
  with pytest.raises(ConfigError, match="latent_codes"):
    LEOConfig(latent_codes="per_task")
  with pytest.raises(ConfigError, match="inner_loss"):
    LEOConfig(inner_loss="max")


# ------------------------------------------------------------------ optimiser and guard

SMALL = tiny_leo(**TINY_5WAY, dropout_rate=0.0, l2_weight=3.6e-10)


def _trainer(tmp_path, data, **kw):
  config = TrainConfig(**{**dict(num_steps=1, meta_batch_size=2, num_queries=2,
                                 outer_lr=1e-3, log_every=1), **kw})
  return MetaTrainer(SMALL, config, data, None, str(tmp_path), log=lambda _: None)


def test_a_non_finite_step_applies_the_clipped_authors_guard_with_adam_epsilon(tmp_path):
  train = synthetic_embeddings(6, 6, dim=16, seed=0)
  broken = EmbeddingSet(np.full_like(train.embeddings, np.nan), train.class_ids,
                        train.class_names, train.keys)
  # A tight norm clip makes the applied gradients ~1e-8, where epsilon matters.
  trainer = _trainer(tmp_path, broken, clip_norm=1e-6)
  assert trainer.optimizer.epsilon == 1e-8
  network = {id(v) for v in trainer.model.network_variables()}
  before = [v.numpy().astype(np.float64) for v in trainer.model.trainable_variables]
  metrics = trainer.train_step()
  assert metrics["finite"] == 0.0
  lr, eps = 1e-3, 1e-8
  for v, w0 in zip(trainer.model.trainable_variables, before):
    if id(v) not in network:                           # the step sizes: no gradient
      np.testing.assert_array_equal(v.numpy(), w0)
      continue
    g = 1e-4 * w0                                         # d/dw of (1e-4 / lambda1) * L2
    g = np.clip(g, -0.1, 0.1)
    g *= min(1.0, 1e-6 / np.linalg.norm(g))
    # Adam's first step: lr * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps) with
    # m = (1 - b1) g, v = (1 - b2) g^2, i.e. lr * g / (|g| + eps / sqrt(1 - b2)).
    expected = w0 - lr * g / (np.abs(g) + eps / math.sqrt(1 - 0.999))
    np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-9)
    # Keras' epsilon 1e-7 gives other values; the old lambda1 * w guard (~4e-14 here)
    # would move the weights by ~1e-10 instead of ~1e-4.
    keras_eps = w0 - lr * g / (np.abs(g) + 1e-7 / math.sqrt(1 - 0.999))
    assert not np.allclose(v.numpy(), keras_eps, rtol=1e-5, atol=1e-9)
    assert np.max(np.abs(v.numpy() - w0)) > 1e-4


def test_adam_epsilon_and_guard_weight_are_bound_through_gin():
  gin_config.parse(["experiments/mini_final_1shot.gin"],
                   ["TrainConfig.adam_epsilon = 1e-7", "TrainConfig.guard_l2_weight = 0.0"])
  config = TrainConfig()
  assert (config.adam_epsilon, config.guard_l2_weight) == (1e-7, 0.0)
  gin_config.parse(["experiments/mini_final_1shot.gin"])
  assert (TrainConfig().adam_epsilon, TrainConfig().guard_l2_weight) == (1e-8, 1e-4)
  with pytest.raises(ConfigError, match="adam_epsilon"):
    TrainConfig(adam_epsilon=0.0)


# ------------------------------------------------------------------ gin files

@pytest.mark.parametrize("dataset, shots", [("mini", 1), ("mini", 5), ("tiered", 1),
                                            ("tiered", 5)])
def test_trainval_files_train_on_val_and_still_select(dataset, shots):
  gin_config.parse([f"experiments/{dataset}_final_{shots}shot_trainval.gin"])
  train = TrainConfig()
  assert train.train_on_val and train.select_on_val and train.validate_every == 1000
  assert LEOConfig().num_shots == shots


def test_paper_files_take_the_papers_step_and_ablations():
  gin_config.parse(["experiments/mini_paper_5shot.gin"])
  c = LEOConfig()
  assert (c.latent_codes, c.inner_loss, c.inner_lr_init, c.learn_inner_lr) == (
      "per_class", "sum", 1.0, False)
  gin_config.parse(["experiments/mini_paper_deterministic_1shot.gin"])
  c = LEOConfig()
  assert not c.stochastic and not c.use_relation_net and c.inner_steps_test == 6
  gin_config.parse(["experiments/mini_paper_random_prior_1shot.gin"])
  assert LEOConfig().initialisation == "random_prior"
  assert TrainConfig().outer_lr == 0.001 and TrainConfig().num_steps == 50000
  gin_config.parse(["experiments/mini_paper_maml_1shot.gin"])
  c = LEOConfig()
  assert (c.initialisation, c.classifier_bias, c.inner_loss, c.finetune_lr_init,
          c.finetune_steps_train, c.finetune_steps_test) == ("maml", True, "mean", 0.01, 5, 10)
  gin_config.parse(["experiments/mini_final_maml_1shot.gin"])
  c = LEOConfig()
  assert (c.initialisation, c.classifier_bias, c.use_relation_net) == ("maml", False, True)


# ------------------------------------------------------------------ train + val

def _write_split(root, split, data):
  import pickle
  folder = os.path.join(root, "miniImageNet", "center")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f"{split}_embeddings.pkl"), "wb") as f:
    pickle.dump(dict(embeddings=data.embeddings, labels=data.class_ids, keys=data.keys), f,
                protocol=2)


def test_train_on_val_trains_on_val_classes_and_still_selects_on_them(tmp_path):
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  root, run = str(tmp_path / "emb"), str(tmp_path / "run")
  for split, seed in (("train", 0), ("val", 1), ("test", 2)):
    _write_split(root, split, synthetic_embeddings(6, 8, dim=16, seed=seed, prefix=split))
  gin_config.parse(["experiments/mini_final_1shot_trainval.gin"], [
      f"EmbeddingSource.root = {root!r}", "TrainConfig.num_steps = 4",
      "TrainConfig.validate_every = 2", "TrainConfig.checkpoint_every = 2",
      "TrainConfig.num_val_episodes = 10", "TrainConfig.meta_batch_size = 2",
      "TrainConfig.log_every = 2", "TrainConfig.num_queries = 3",
      "TrainConfig.val_num_queries = 3", "EvalConfig.num_episodes = 10",
      *gin_bindings(LEOConfig=ONE_STEP)])
  lines = []
  result = run_experiment(RunConfigs.from_gin(), output_dir=run, log=lines.append)
  assert any("train + val classes (12)" in l and "validation still selects" in l
             for l in lines)
  assert sum("[validate] step" in l for l in lines) == 2
  with open(RunDir(run).best_record) as f:
    assert json.load(f)["step"] in (2, 4)
  assert any("[result] best checkpoint" in l for l in lines)
  assert result.best_validation >= 0.0


def teardown_module():
  import gin
  gin.clear_config()
