"""Reliability in one process: determinism, resume equivalence, the non-finite guard,
checkpoint fallback and mismatch errors, gin typos, impossible episodes, bad images."""

import dataclasses
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from helpers import synthetic_embeddings, tiny_leo, tiny_train
from leo_tf import checkpoints, gin_config
from leo_tf.cli import common
from leo_tf.data.embeddings import EmbeddingDataError
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.evaluation import evaluate
from leo_tf.leo.trainer import MetaTrainer, TrainingDivergedError
from leo_tf.leo.weights import load_model
from leo_tf.runtime.rundir import RunDir

MODEL = tiny_leo()
TRAIN = tiny_train(10, checkpoint_every=5, validate_every=5, log_every=5, seed=3)


@pytest.fixture(scope="module")
def data():
  return (synthetic_embeddings(6, 6, dim=8, seed=1, prefix="a"),
          synthetic_embeddings(4, 6, dim=8, seed=2, prefix="b"))


def _trainer(out, data, train=TRAIN, model=MODEL, val=True, cls=MetaTrainer, **kw):
  logs = []
  trainer = cls(model, train, data[0], data[1] if val else None, str(out),
                log=logs.append, **kw)
  return trainer, logs


def _losses(out, data, steps):
  record = []
  trainer, _ = _trainer(out, data, dataclasses.replace(TRAIN, num_steps=steps), val=False,
                        on_step=lambda step, m: record.append((step, m["loss"])))
  trainer.train()
  return record


# ------------------------------------------------------------------ determinism


def test_same_seed_same_losses_and_resume_repeats_them(tmp_path, data):
  """100 steps twice with seed 3: once straight, once stopped at 40 and resumed by a
  fresh trainer. Every loss is bit-identical (episodes/dropout are f(seed, step))."""
  straight = _losses(tmp_path / "a", data, 100)
  interrupted = _losses(tmp_path / "b", data, 40) + _losses(tmp_path / "b", data, 100)
  assert [s for s, _ in interrupted] == list(range(1, 101))
  assert [l for _, l in straight] == [l for _, l in interrupted]
  assert len(set(l for _, l in straight)) > 50  # the losses really change


# ------------------------------------------------------------------ the guard


class _NaNAt(MetaTrainer):
  """Multiplies the support set by NaN at the given (0-based) steps."""
  bad = ()

  def replica_batch(self, step, replica=0):
    batch = super().replica_batch(step, replica)
    poison = tf.reduce_any(tf.equal(step, tf.constant(self.bad, tf.int64)))
    return dict(batch, support=batch["support"] * tf.where(poison, np.nan, 1.0))


def test_non_finite_steps_are_guarded_counted_and_stop_training(tmp_path, data):
  _NaNAt.bad = (0, 4, 5) + tuple(range(8, 20))
  seen = []
  trainer, logs = _trainer(tmp_path, data, dataclasses.replace(
      TRAIN, num_steps=20, max_bad_steps=3, log_every=4, guard_l2_weight=0.0), val=False,
      cls=_NaNAt, on_step=lambda s, m: seen.append(
          (s, m["finite"], int(trainer.bad_steps.numpy()),
           [v.numpy().copy() for v in trainer.model.weights])))
  initial = [v.numpy().copy() for v in trainer.model.weights]
  with pytest.raises(TrainingDivergedError, match=r"3 consecutive .* step 11, 6 in total"):
    trainer.train()
  # Step 1 was non-finite: with guard_l2_weight=0 the guard applies zero gradients, and
  # Adam with zero moments does not move: every weight is bit-identical.
  for before, after in zip(initial, seen[0][3]):
    np.testing.assert_array_equal(before, after)
  assert not np.array_equal(seen[1][3][2], seen[0][3][2])  # a finite step moves them
  assert [s[1] for s in seen] == [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
  assert [s[2] for s in seen] == [1, 0, 0, 0, 1, 2, 0, 0, 1, 2, 3]
  for weights in seen:
    assert all(np.isfinite(w).all() for w in weights[3])
  assert int(trainer.guarded_steps.numpy()) == 6
  assert any("non-finite steps guarded (3 in total)" in line for line in logs)
  # The stop saved a checkpoint that carries both counters.
  reader = tf.train.load_checkpoint(trainer.latest.latest_checkpoint)
  assert reader.get_tensor("guarded_steps/.ATTRIBUTES/VARIABLE_VALUE") == 6
  assert reader.get_tensor("bad_steps/.ATTRIBUTES/VARIABLE_VALUE") == 3


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
  out = tmp_path_factory.mktemp("trained")
  trainer, _ = _trainer(out, data)
  trainer.train()
  return trainer, str(out)


def test_load_model_restores_every_weight(trained, data):
  """Regression: Keras 3 keeps list-held kernels out of tf.train.Checkpoint, so a
  checkpoint of the model object alone held only the two learning-rate vectors."""
  trainer, out = trained
  model = load_model(out, MODEL, 8, "latest")
  assert len(model.weights) == len(trainer.model.weights) >= 6
  for a, b in zip(trainer.model.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_evaluation_is_bit_identical(trained, data):
  trainer, out = trained
  sampler = EpisodeSampler(data[1], 3, 1, None)
  first = evaluate(load_model(out, MODEL, 8, "best"), sampler, 16, 8, seed=5).accuracies
  second = evaluate(load_model(out, MODEL, 8, "best"), sampler, 16, 8, seed=5).accuracies
  np.testing.assert_array_equal(first, second)


def test_checkpoint_of_another_configuration_names_the_shapes(trained, data):
  _, out = trained
  wide = dataclasses.replace(MODEL, latent_size=6)
  message = r"inner_lr has shape \(4,\) in the checkpoint but \(6,\) in this model"
  with pytest.raises(checkpoints.CheckpointMismatchError, match=message):
    load_model(out, wide, 8, "latest")
  with pytest.raises(checkpoints.CheckpointMismatchError, match=message):
    _trainer(out, data, model=wide)[0].restore()
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="trained on 8-dimensional embeddings; these have 5"):
    load_model(out, MODEL, 5, "latest")


def _copy_run(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return str(dst)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(trained, data, tmp_path):
  out = _copy_run(trained[1], tmp_path / "run")
  latest = RunDir(out).checkpoints("latest")
  with open(os.path.join(latest, "ckpt-10.data-00000-of-00001"), "r+b") as f:
    f.truncate(7)
  trainer, logs = _trainer(out, data)
  assert trainer.restore() == 5
  assert any(l.startswith("warning: checkpoint") and "ckpt-10 is unreadable" in l
             for l in logs)
  # A damaged state file (TF would silently start over) still finds the files.
  with open(os.path.join(latest, "checkpoint"), "w") as f:
    f.write("model_checkpoint_path: {{{ garbage")
  assert _trainer(out, data)[0].restore() == 5
  for name in os.listdir(latest):
    if name.startswith("ckpt-5."):
      os.remove(os.path.join(latest, name))
  with pytest.raises(checkpoints.CorruptCheckpointError, match="no readable checkpoint"):
    _trainer(out, data)[0].restore()


def test_interrupted_new_best_is_finished_or_undone(trained, data, tmp_path):
  out = _copy_run(trained[1], tmp_path / "run")
  best = RunDir(out).best_record
  with open(best) as f:
    record = json.load(f)
  # Crash after the checkpoint but before the rename: the commit is finished.
  os.rename(best, best + ".pending")
  trainer, _ = _trainer(out, data)
  trainer.restore()
  with open(best) as f:
    assert json.load(f) == record
  # Crash before the checkpoint: the pending record names a step with no checkpoint.
  with open(best + ".pending", "w") as f:
    json.dump(dict(record, step=999, accuracy=1.0), f)
  trainer.restore()
  assert not os.path.exists(best + ".pending")
  assert trainer.best_validation() == record["accuracy"]


# ------------------------------------------------------------------ gin typos


@pytest.mark.parametrize("text, expected", [
    ("TrainConfig.num_steps = 3\nTrainConfg.num_steps = 4\n",
     r"bad\.gin, line 2: No configurable matching 'TrainConfg'.* \(in `TrainConfg\.num_steps = 4`\)"),
    ("TrainConfig.num_step = 3\n",
     r"bad\.gin, line 1: Configurable 'TrainConfig' doesn't have a parameter named 'num_step'"),
    ("LEOConfig.latent_size = (3\n", r"bad\.gin, line 2: syntax error"),
    ("run_experiment.log = @nosuch\n", r"line 1: No configurable matching reference '@nosuch'"),
])
def test_gin_errors_name_the_file_line_and_binding(tmp_path, text, expected):
  path = tmp_path / "bad.gin"
  path.write_text(text)
  try:
    with pytest.raises(gin_config.GinConfigError, match=expected) as info:
      gin_config.parse([str(path)])
    assert "\n" not in str(info.value)
  finally:
    gin.clear_config()


def test_gin_typo_in_an_included_file_names_both(tmp_path):
  (tmp_path / "inner.gin").write_text("LEOConfig.latnet_size = 3\n")
  (tmp_path / "outer.gin").write_text("include 'inner.gin'\n")
  try:
    with pytest.raises(gin_config.GinConfigError,
                       match=r"inner\.gin \(included from .*outer\.gin\), line 1: .*latnet_size"):
      gin_config.parse([str(tmp_path / "outer.gin")])
    with pytest.raises(gin_config.GinConfigError,
                       match=r"command-line binding 'TrainConfig\.nmu_steps = 1': .*'nmu_steps'"):
      gin_config.parse([], ["TrainConfig.nmu_steps = 1"])
  finally:
    gin.clear_config()


# ------------------------------------------------------------------ impossible requests


@pytest.mark.parametrize("n, k, q, message", [
    (7, 1, 2, "needs 7 classes of at least 2 examples .* LEOConfig.num_classes = 6 would"),
    # Queries never make an episode impossible (a class gives what it has), shots can.
    (3, 6, 2, r"needs 3 classes of at least 7 examples \(6 shots \+ 1 query\) but 0 of "
     "its 6 classes have that many; LEOConfig.num_shots = 5 would work"),
    (3, 6, None, r"needs 3 classes of at least 7 examples"),
    (1, 1, 1, "at least 2 classes"),
    (3, 0, 1, "at least 1 shot"),
])
def test_episodes_the_data_cannot_supply(data, n, k, q, message):
  with pytest.raises(EmbeddingDataError, match=message):
    EpisodeSampler(data[0], n, k, q)


def test_cli_turns_user_errors_into_one_line(capsys):
  def broken():
    raise EmbeddingDataError("x.pkl: bad\nsecond line")
  with pytest.raises(SystemExit) as info:
    common.run_guarded(broken)
  assert info.value.code == 2
  assert capsys.readouterr().err == "error: x.pkl: bad second line\n"


def test_undecodable_image_is_one_line_through_tf_data(tmp_path, capsys):
  images = pytest.importorskip("leo_tf.data.images")
  from PIL import Image
  good, bad = str(tmp_path / "ok.png"), str(tmp_path / "bad.png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(good)
  with open(bad, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(images.ImageDecodeError, match="cannot decode image file .*bad.png"):
    images.read_image(bad)
  dataset = images.files_dataset([good, bad], [0, 1], ["a", "b"])
  with pytest.raises(SystemExit) as info:
    common.run_guarded(lambda: [x for x in dataset])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: cannot decode image file ") and "bad.png" in err
  assert err.count("\n") == 1
