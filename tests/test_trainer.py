"""Meta-training bookkeeping: checkpoints, resume, validation, train + val, the guard."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import TINY_5WAY, synthetic_embeddings, tiny_leo
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.leo.config import TrainConfig
from leo_tf.leo.model import task_losses
from leo_tf.leo.trainer import MetaTrainer, TrainingDivergedError, task_group_sizes
from leo_tf.leo.weights import load_model
from leo_tf.runtime.rundir import RunDir

# Small and few inner steps: these tests are about bookkeeping, and tracing is the cost.
MODEL = tiny_leo(**TINY_5WAY, dropout_rate=0.0)


def _train_config(**kw):
  base = dict(num_steps=20, meta_batch_size=4, num_queries=3, validate_every=10,
              checkpoint_every=5, num_val_episodes=20, val_batch_size=10, log_every=5,
              val_num_queries=3, outer_lr=1e-3)
  base.update(kw)
  return TrainConfig(**base)


@pytest.fixture(scope="module")
def data():
  return (synthetic_embeddings(10, 8, dim=16, seed=0),
          synthetic_embeddings(6, 8, dim=16, seed=1, prefix="v"))


class _Interrupt(Exception):
  pass


def test_resume_continues_from_the_saved_step(tmp_path, data):
  train, val = data

  def interrupt_at_step_15(step, _):
    if step == 15:
      raise _Interrupt()

  trainer = MetaTrainer(MODEL, _train_config(), train, val, str(tmp_path),
                        log=lambda _: None, on_step=interrupt_at_step_15)
  with pytest.raises(_Interrupt):
    trainer.train()
  assert int(trainer.step.numpy()) == 15
  # Step 15 ended before its checkpoint: the newest one is step 10.
  assert trainer.latest.latest_checkpoint.endswith("ckpt-10")
  steps = []
  resumed = MetaTrainer(MODEL, _train_config(), train, val, str(tmp_path),
                        log=lambda _: None, on_step=lambda step, _: steps.append(step))
  assert resumed.restore() == 10
  weights_at_10 = [v.numpy() for v in resumed.model.trainable_variables]
  resumed.train()
  assert int(resumed.step.numpy()) == 20
  assert steps == list(range(11, 21))                     # from step 10 on, none twice
  assert any(not np.array_equal(a, v.numpy())
             for a, v in zip(weights_at_10, resumed.model.trainable_variables))
  # Finished: a third run does nothing.
  again = MetaTrainer(MODEL, _train_config(), train, val, str(tmp_path),
                      log=lambda _: None, on_step=lambda step, _: steps.append(step))
  again.train()
  assert int(again.step.numpy()) == 20 and steps == list(range(11, 21))


def test_best_checkpoint_and_its_record(tmp_path, data):
  train, val = data
  trainer = MetaTrainer(MODEL, _train_config(), train, val, str(tmp_path), log=lambda _: None)
  trainer.train()
  with open(RunDir(tmp_path).best_record) as f:
    best = json.load(f)
  assert best["step"] in (10, 20) and 0.0 <= best["accuracy"] <= 1.0
  assert trainer.best_validation() == best["accuracy"]
  model = load_model(str(tmp_path), MODEL, train.dim, "best")
  assert isinstance(model.inner_lr.numpy(), np.ndarray)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    load_model(str(tmp_path / "missing"), MODEL, train.dim)


def test_warm_start_takes_another_runs_best_weights_then_resumes_its_own(tmp_path, data):
  train, val = data
  first = MetaTrainer(MODEL, _train_config(), train, val, str(tmp_path / "first"),
                      log=lambda _: None)
  first.train()
  best = load_model(str(tmp_path / "first"), MODEL, train.dim, "best")
  lines = []
  config = _train_config(num_steps=5, warm_start=str(tmp_path / "first"))
  warm = MetaTrainer(MODEL, config, train, val, str(tmp_path / "warm"), log=lines.append)
  assert warm.restore() == 0                     # its own step count, a fresh optimizer
  assert int(warm.optimizer.iterations.numpy()) == 0
  for a, b in zip(warm.model.trainable_variables, best.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert any("TrainConfig.warm_start" in line and "best" in line for line in lines)
  warm.train(0)
  trained = [v.numpy() for v in warm.model.trainable_variables]
  # Once the run has checkpoints of its own, they win over the warm start.
  again = MetaTrainer(MODEL, config, train, val, str(tmp_path / "warm"), log=lambda _: None)
  assert again.restore() == 5
  for a, b in zip(again.model.trainable_variables, trained):
    np.testing.assert_array_equal(a.numpy(), b)
  missing = _train_config(warm_start=str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="has no checkpoint in best/ or latest/"):
    MetaTrainer(MODEL, missing, train, val, str(tmp_path / "cold"), log=lambda _: None).restore()


def test_train_plus_val_concatenation_feeds_training(data):
  train, val = data
  joined = EmbeddingSet.concatenate([train, val])
  assert joined.num_classes == train.num_classes + val.num_classes


def test_non_finite_steps_leave_weights_untouched_and_stop_training(tmp_path, data):
  train, _ = data
  broken = EmbeddingSet(np.full_like(train.embeddings, np.inf), train.class_ids,
                        train.class_names, train.keys)
  model = tiny_leo(**TINY_5WAY, l2_weight=0.0)
  trainer = MetaTrainer(model, _train_config(max_bad_steps=3, guard_l2_weight=0.0), broken,
                        None, str(tmp_path), log=lambda _: None)
  before = [v.numpy() for v in trainer.model.trainable_variables]
  with pytest.raises(TrainingDivergedError, match="3 consecutive"):
    trainer.train()
  # With a zero guard weight the guard applies zero gradients: Adam leaves every weight as
  # it was (tests/test_protocol.py checks the step of the authors' 1e-4).
  for a, v in zip(before, trainer.model.trainable_variables):
    np.testing.assert_array_equal(a, v.numpy())
  assert int(trainer.bad_steps.numpy()) == 3


def test_meta_batch_must_split_across_replicas(data):
  train, _ = data

  class TwoReplicas:
    num_replicas_in_sync = 2

  with pytest.raises(ValueError, match="divide evenly"):
    MetaTrainer(MODEL, _train_config(meta_batch_size=5), train, None, "/tmp/x",
                strategy=TwoReplicas())


def test_task_group_sizes_split_consecutive_tasks_evenly():
  assert task_group_sizes(12, 2) == [6, 6]
  assert task_group_sizes(7, 3) == [3, 2, 2]
  assert task_group_sizes(5, 1) == [5]
  assert task_group_sizes(3, 4) == [1, 1, 1]       # never an empty group


def _deterministic(**kw):
  return tiny_leo(**TINY_5WAY, num_shots=2, dropout_rate=0.0, stochastic=False, **kw)


def test_a_step_trains_on_the_episodes_replica_batch_names(tmp_path, data):
  """The in-graph sampler feeds the step: its loss at step 0 is the loss of the model
  on replica_batch(0) computed by hand (random-free model, so nothing else differs)."""
  train, _ = data
  trainer = MetaTrainer(_deterministic(), _train_config(meta_batch_size=3), train, None,
                        str(tmp_path), log=lambda _: None)
  batch = trainer.replica_batch(tf.constant(0, tf.int64))
  outputs = trainer.model(batch, training=True)
  reg = trainer.model.regularization()
  expected = float(tf.reduce_mean(task_losses(outputs, trainer.model_config)) +
                   tf.add_n(list(reg.values())))
  metrics = trainer.train_step()
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  assert metrics["finite"] == 1.0 and metrics["bad_steps"] == 0.0
  later = trainer.replica_batch(tf.constant(1, tf.int64))
  assert not np.array_equal(batch["support"].numpy(), later["support"].numpy())


def test_task_groups_change_the_schedule_not_the_step(tmp_path, data):
  """Random-free, one group and three groups must take the same step."""
  train, _ = data
  results = []
  for groups in (1, 3):
    trainer = MetaTrainer(_deterministic(), _train_config(meta_batch_size=5,
                                                          task_groups=groups),
                          train, None, str(tmp_path / str(groups)), log=lambda _: None)
    metrics = [trainer.train_step() for _ in range(3)]
    results.append((metrics, [v.numpy() for v in trainer.model.trainable_variables]))
  (m1, w1), (m3, w3) = results
  for a, b in zip(m1, m3):
    for key in ("loss", "query_loss", "accuracy"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  for a, b in zip(w1, w3):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_classes_of_seven_examples_train_on_all_of_them(tmp_path):
  # The default 15 queries: each 1-shot episode takes a class's 6 other examples.
  train, val = (synthetic_embeddings(8, 7, dim=16, seed=s, prefix=p) for s, p in
                ((0, "c"), (1, "v")))
  config = _train_config(num_steps=4, validate_every=4, num_queries=15, val_num_queries=15)
  trainer = MetaTrainer(tiny_leo(**TINY_5WAY, num_shots=1), config, train, val, str(tmp_path),
                        log=lambda _: None)
  assert trainer.train_sampler.num_queries == trainer.val_sampler.num_queries == 6
  batch = trainer.replica_batch(tf.constant(0, tf.int64))
  assert batch["query"].shape[2] == 6 and np.all(batch["query_mask"].numpy() == 1.0)
  trainer.train()
  assert 0.0 <= trainer.best_validation() <= 1.0
