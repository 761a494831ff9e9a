"""End-to-end LEO (leo/end_to_end.py): the meta-gradient reaches every backbone weight and
matches finite differences, frozen batch norm keeps its statistics, the features at step 0
are leo-embed's embeddings, two replicas equal one device, a tiny leo-train run from
nothing writes the backbone and its embeddings and tests on them, and a SIGKILLed run
resumes bit for bit."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from _crash_campaign import run_campaign
from _tiny_images import tiny_source, write_tiny_folder
from helpers import gin_bindings, tiny_leo, tiny_train
from leo_tf import gin_config
from leo_tf.backbone import embed, wrn
from leo_tf.checkpoints import CheckpointMismatchError
from leo_tf.config_checks import ConfigError
from leo_tf.data.embeddings import EmbeddingDataError
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.end_to_end import (BACKBONE_VARIABLES, EndToEnd, EndToEndConfig,
                                   backbone_variables, row_numbers)
from leo_tf.leo.model import build_leo, task_losses
from leo_tf.leo.trainer import MetaTrainer
from leo_tf.runtime.rundir import RunDir

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_backbone(seed=0):
  """WRN-10-1 with random weights and random (not 0/1) batch-norm statistics, so
  inference-mode BN is not the identity."""
  tf.keras.utils.set_random_seed(seed)
  backbone = wrn.build_wrn(depth=10, width=1, input_shape=(None, None, 1))
  rng = np.random.default_rng(seed)
  for v in backbone.weights:
    if "moving_mean" in v.path:
      v.assign(rng.normal(0.0, 0.3, v.shape).astype(np.float32))
    elif "moving_variance" in v.path:
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
  return backbone


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A tiny backbone, its leo-embed embeddings of the tiny image splits, and their source."""
  tmp = tmp_path_factory.mktemp("e2e")
  backbone = tiny_backbone()
  root = str(tmp / "embeddings")
  for split in ("train", "val", "test"):
    embed.write_split(backbone, tiny_source(split), root, "tiny", "center", split)
  path = str(tmp / "backbone.keras")
  backbone.save(path)
  source = EmbeddingSource(root=root, dataset="tiny")
  return dict(tmp=tmp, path=path, source=source, splits=source.load_all())


def end_to_end(tiny, **config):
  config = EndToEndConfig(enabled=True, backbone=tiny["path"], image_source=tiny_source,
                          **config)
  return EndToEnd.create(config, tiny["source"], tiny["splits"], ("train",),
                         tf.distribute.get_strategy(), log=lambda _: None)


def trainer(tiny, out, e2e, steps=2, **train):
  return MetaTrainer(tiny_leo(), tiny_train(steps, log_every=steps, validate_every=steps,
                                            checkpoint_every=steps, **train),
                     tiny["splits"]["train"], tiny["splits"]["val"], str(out),
                     log=lambda _: None, end_to_end=e2e)


# ------------------------------------------------------------------ the meta-gradient

def _fd_config(first_order=False):
  """Smooth (linear relation network), deterministic, no encoder penalty (its
  stop_gradient is not what finite differences measure), as test_inner_loop's."""
  return LEOConfig(num_classes=3, num_shots=2, latent_size=3, relation_hidden=(),
                   stochastic=False, dropout_rate=0.0, inner_steps_train=2,
                   finetune_steps_train=2, inner_lr_init=0.7, finetune_lr_init=0.3,
                   first_order=first_order, kl_weight=0.1, encoder_penalty_weight=0.0,
                   l2_weight=1e-3, orthogonality_weight=0.1)


def _meta_loss(model, e2e, rows):
  out = model(e2e.features(rows), training=True, seed=tf.constant([3, 4]))
  return (tf.reduce_mean(task_losses(out, model.config)) +
          tf.add_n(list(model.regularization().values())))


def _backbone_gradients(model, e2e, rows):
  with tf.GradientTape() as tape:
    loss = _meta_loss(model, e2e, rows)
  return tape.gradient(loss, e2e.variables)


def _directional(model, e2e, rows, direction, eps=1e-3):
  """Central finite difference of the meta-loss along ``direction`` in backbone weights."""
  originals = [v.numpy() for v in e2e.variables]
  values = []
  for sign in (1.0, -1.0):
    for v, o, d in zip(e2e.variables, originals, direction):
      v.assign(o + sign * eps * d)
    values.append(float(_meta_loss(model, e2e, rows)))
  for v, o in zip(e2e.variables, originals):
    v.assign(o)
  return (values[0] - values[1]) / (2 * eps)


def test_the_meta_gradient_reaches_every_backbone_weight_and_matches_finite_differences(tiny):
  e2e = end_to_end(tiny)
  rows = EpisodeSampler(row_numbers(tiny["splits"]["train"]), 3, 2, 2).sample(2, [5, 6])
  tf.keras.utils.set_random_seed(0)
  model = build_leo(_fd_config(), tiny["splits"]["train"].dim)
  first_order = build_leo(_fd_config(first_order=True), model.dim)
  for a, b in zip(first_order.trainable_variables, model.trainable_variables):
    a.assign(b)
  # Fixed embeddings: LEO stops the gradient at its inputs.
  assert all(g is None for g in _backbone_gradients(model, e2e, rows))
  model.input_gradients = first_order.input_gradients = True
  grads = _backbone_gradients(model, e2e, rows)
  names = [v.path for v in e2e.variables]
  assert len(names) == len(e2e.backbone.trainable_weights) == 23  # 9 convs, 7 BNs x 2
  silent = [n for n, g in zip(names, grads) if g is None or not np.any(g.numpy())]
  assert not silent, silent
  grads_fo = _backbone_gradients(first_order, e2e, rows)
  # Along the gradient (a random direction's derivative is near the float32 resolution
  # of the loss): the whole of it, then each weight's own part.
  unit = lambda gs: [g.numpy() / np.sqrt(sum(np.sum(np.square(h)) for h in gs)) for g in gs]
  along = lambda gs, d: sum(float(np.sum(g.numpy() * x)) for g, x in zip(gs, d))
  direction = unit(grads)
  fd = _directional(model, e2e, rows, direction, eps=3e-3)
  assert abs(along(grads, direction) - fd) < 1e-2 * fd
  # Through the inner loops matters: without their second-order terms it is far off.
  assert abs(along(grads_fo, direction) - fd) > 0.3 * fd
  zeros = [np.zeros(v.shape, np.float32) for v in e2e.variables]
  for i, name in enumerate(names):
    direction = zeros[:i] + unit([grads[i]]) + zeros[i + 1:]
    fd = _directional(model, e2e, rows, direction, eps=1e-2)
    # 1e-5: the loss's float32 resolution (1e-7) over the step 2 * eps
    tolerance = 2e-2 * abs(fd) + 1e-5
    assert abs(along(grads, direction) - fd) < tolerance, name
    assert abs(along(grads_fo, direction) - fd) > tolerance, name


# ------------------------------------------------------------------ batch norm


def _statistics(backbone):
  return {v.path: v.numpy().copy() for v in backbone.weights if "moving" in v.path}


@pytest.mark.parametrize("batch_norm", ["frozen", "train"])
def test_frozen_batch_norm_keeps_its_statistics_and_learns_its_scales(tiny, tmp_path,
                                                                      batch_norm):
  e2e = end_to_end(tiny, batch_norm=batch_norm, learning_rate=1e-2)
  before = _statistics(e2e.backbone)
  gammas = {v.path: v.numpy().copy() for v in e2e.variables if "gamma" in v.path}
  trainer(tiny, tmp_path / "run", e2e, steps=2).train()
  moved = [k for k, v in _statistics(e2e.backbone).items()
           if not np.array_equal(v, before[k])]
  if batch_norm == "frozen":
    assert not moved
  else:  # the check has teeth: batch statistics in training move them
    assert len(moved) == len(before) == 14
  assert all(not np.array_equal(v.numpy(), gammas[v.path])
             for v in e2e.variables if "gamma" in v.path)


# ------------------------------------------------------------------ step 0


def test_features_at_step_0_are_the_embeddings_leo_embed_wrote(tiny, tmp_path):
  e2e = end_to_end(tiny)
  t = trainer(tiny, tmp_path / "run", e2e)
  rows = t.replica_batch(tf.constant(0, tf.int64))
  frozen = EpisodeSampler.for_model(tiny["splits"]["train"], t.model_config,
                                    t.config.num_queries)
  seed = [t.config.seed + 1, 0]  # what replica_batch folds: the same stream, step 0
  from leo_tf.data.episodes import fold_seed
  expected = frozen.sample(t.config.meta_batch_size, fold_seed(fold_seed(seed[0], 0), 0))
  features = e2e.features(rows)
  np.testing.assert_array_equal(features["classes"], expected["classes"])
  for part in ("support", "query"):
    assert features[part].shape == expected[part].shape
    np.testing.assert_allclose(features[part], expected[part], atol=2e-6)


# ------------------------------------------------------------------ distribution


def test_two_replicas_equal_one_device(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "_distributed_worker.py"),
                         "e2e_mirrored", str(tmp_path)], env=env, capture_output=True,
                        text=True, timeout=420)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
  result = json.loads(lines[-1][len("RESULT "):])
  assert result["replicas"] == 2
  assert result["max_difference"] < 1e-5, result
  assert result["backbone_moved"] > 1e-3, result  # the equality is not of unmoved weights


# ------------------------------------------------------------------ leo-train, end to end

STEPS = 30


def _experiment(tmp, steps=STEPS):
  """A gin file: the images experiment on a tiny folder, made end-to-end and tiny."""
  images = tmp / "pictures"
  write_tiny_folder(str(images), split_dirs=True)
  bindings = gin_bindings(
      image_source=dict(image_size=16), build_wrn=dict(depth=10, width=1),
      EmbeddingSource=dict(root=str(tmp / "data")),
      PretrainConfig=dict(steps=4, steps_per_loop=2, batch_size=16, checkpoint_every=4,
                          holdout_fraction=0.0),
      LEOConfig=dict(num_classes=3, latent_size=4, relation_hidden=(8,), inner_steps_train=1,
                     inner_steps_test=1, finetune_steps_train=1, finetune_steps_test=1),
      TrainConfig=dict(num_steps=steps, meta_batch_size=2, num_queries=2, val_num_queries=2,
                       validate_every=10, checkpoint_every=5, log_every=10,
                       num_val_episodes=6, val_batch_size=6),
      EvalConfig=dict(num_episodes=12, batch_size=6),
      EndToEndConfig=dict(learning_rate=1e-3))
  lines = ["include 'experiments/images_5way1shot.gin'", "include 'training/end_to_end.gin'",
           f"IMAGES_ROOT = {str(images)!r}", "run_experiment.after_test = None", *bindings]
  path = tmp / "e2e.gin"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _run(*args):
  proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """leo-train from nothing (pre-training, embeddings, end-to-end meta-training, test)."""
  tmp = tmp_path_factory.mktemp("leo_train")
  gin_file = _experiment(tmp)
  out = tmp / "run"
  log = _run("leo-train", f"--gin_file={gin_file}", f"--output_dir={out}")
  return dict(tmp=tmp, gin_file=gin_file, out=str(out), log=log)


def test_leo_train_writes_the_backbone_and_its_embeddings_and_tests_on_them(trained):
  run, log = RunDir(trained["out"]), trained["log"]
  assert "[stage] pre-training into" in log and "[end-to-end] backbone" in log
  best = json.loads(open(run.best_record).read())["step"]
  assert f"[end-to-end] the best checkpoint's backbone: {run.backbone}" in log
  # The saved backbone is the best checkpoint's, not the last step's.
  saved, restored = (keras.saving.load_model(run.backbone, compile=False) for _ in range(2))
  tf.train.Checkpoint(**{BACKBONE_VARIABLES: backbone_variables(restored)}).restore(
      run.newest("best")).assert_existing_objects_matched().expect_partial()
  for a, b in zip(saved.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  assert best == int(os.path.basename(run.newest("best")).split("-")[1])
  # Its embeddings of every split, where the run's source looks; the test read them.
  from leo_tf.leo.run import open_run  # pylint: disable=import-outside-toplevel
  source = open_run(trained["out"], log=lambda _: None).source
  assert source.root == run.embeddings and source.builder is None
  for split in ("train", "val", "test"):
    data = source.load(split)
    assert data.dim == 64 and len(data.keys) > 20  # WRN-10-1
  assert re.search(r"\[result\] best checkpoint, test: accuracy \d+\.\d\d \+- ", log)
  # and leo-eval tests the same checkpoint on the same embeddings, to the same number.
  result = re.search(r"\[result\] best checkpoint, test: accuracy (\S+)", log).group(1)
  again = _run("leo-eval", f"--checkpoint_dir={trained['out']}")
  assert f"accuracy {result} " in again


def _checkpoint_values(run: str, step: int):
  """Every value in a run's latest/ckpt-<step> but the save counter (a killed run saved
  more often), by key: LEO's and the backbone's weights, both optimizers, the counters."""
  reader = tf.train.load_checkpoint(os.path.join(RunDir(run).checkpoints("latest"),
                                                 f"ckpt-{step}"))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if not k.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


@pytest.mark.slow  # five leo-train processes, ~90 s on 2 cores
def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_bit_for_bit(trained):
  # Not the run that built the data: pre-training started TF with its default thread
  # pools, and multi-threaded convolutions round differently (runtime/threads.py).
  reference = str(trained["tmp"] / "uninterrupted")
  _run("leo-train", f"--gin_file={trained['gin_file']}", f"--output_dir={reference}")
  out = str(trained["tmp"] / "killed")
  result = run_campaign(trained["gin_file"], out, kills=2, seed=1, max_delay=0.4)
  assert result["final_returncode"] == 0, result["log"][-3000:]
  assert any(r["killed"] for r in result["records"]), result["records"]
  ours, theirs = (_checkpoint_values(run, STEPS) for run in (out, reference))
  assert ours.keys() == theirs.keys()
  backbone = keras.saving.load_model(RunDir(out).backbone, compile=False)
  assert sum(k.startswith(BACKBONE_VARIABLES) for k in ours) == len(backbone.weights)
  # AdamW's m and v of every trainable weight, its step and learning rate
  assert sum(k.startswith("backbone_optimizer") for k in ours) == (
      2 * len(backbone.trainable_weights) + 2)
  for key in ours:
    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("shots", [1, 5])
def test_the_e2e_experiments_are_the_frozen_ones_with_the_backbone_learning(shots):
  from leo_tf.leo.run import RunConfigs  # pylint: disable=import-outside-toplevel
  runs = {}
  for suffix in ("", "_e2e"):
    gin_config.parse([f"experiments/typefaces_5way{shots}shot{suffix}.gin"])
    runs[suffix] = RunConfigs.from_gin()
  frozen, e2e = runs[""], runs["_e2e"]
  assert e2e.end_to_end.enabled and not frozen.end_to_end.enabled
  assert (e2e.model, e2e.train, e2e.eval, e2e.source) == (
      frozen.model, frozen.train, frozen.eval, frozen.source)
  assert e2e.end_to_end.batch_norm == "frozen" and e2e.end_to_end.optimizer == "adamw"


@pytest.mark.parametrize("binding, message", [
    (dict(precision="mixed_float16"),
     "EndToEndConfig.precision = 'mixed_float16' would need loss scaling of the whole "
     "meta-objective; use 'mixed_bfloat16' or 'float32'"),
    (dict(batch_norm="moving"),
     "EndToEndConfig.batch_norm must be one of ('frozen', 'train'), got 'moving'"),
    (dict(learning_rate=0.0), "EndToEndConfig.learning_rate must be > 0, got 0.0"),
])
def test_bad_settings_are_one_line_naming_the_binding(binding, message):
  with pytest.raises(ConfigError) as error:
    EndToEndConfig(**binding)
  assert str(error.value).splitlines()[0] == message  # gin adds where it was called


def test_a_missing_backbone_names_the_binding(tiny, tmp_path):
  config = EndToEndConfig(enabled=True, backbone=str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError) as error:
    EndToEnd.create(config, tiny["source"], tiny["splits"], ("train",),
                    tf.distribute.get_strategy())
  assert str(error.value) == (
      f"EndToEndConfig.backbone: no pre-trained backbone at {tmp_path}/nowhere/backbone.keras; "
      "bind it to a leo-pretrain model directory or .keras file")


def test_images_that_are_not_the_embeddings_rows_are_refused(tiny):
  config = EndToEndConfig(enabled=True, backbone=tiny["path"],
                          image_source=lambda split: tiny_source("val"))
  with pytest.raises(EmbeddingDataError) as error:
    EndToEnd.create(config, tiny["source"], tiny["splits"], ("train",),
                    tf.distribute.get_strategy())
  assert str(error.value) == (
      f"{tiny['splits']['train'].source}: its rows are not the images of "
      "image_source('train') (first difference at row 0 of 48); end-to-end LEO needs the "
      "images the embeddings were extracted from: bind EndToEndConfig.image_source to them")


def test_a_run_resumes_only_as_the_kind_of_run_it_was(tiny, tmp_path):
  """A frozen run's checkpoints in an end-to-end run, or the other way round, are refused
  before any step (the CLIs print the message as one line)."""
  frozen, e2e = str(tmp_path / "frozen"), str(tmp_path / "e2e")
  trainer(tiny, frozen, None).train()
  trainer(tiny, e2e, end_to_end(tiny)).train()
  for out, written, enabled in ((frozen, "a frozen-embedding", True),
                                (e2e, "an end-to-end", False)):
    with pytest.raises(CheckpointMismatchError) as error:
      trainer(tiny, out, end_to_end(tiny) if enabled else None).restore()
    assert str(error.value) == (
        f"{RunDir(out).newest('latest')} was written by {written} run, and "
        f"EndToEndConfig.enabled is {enabled}: bind it as the run was, or choose another "
        "output_dir")
