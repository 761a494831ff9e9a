"""Runs a tiny pre-training under a tf.distribute strategy in a fresh process.

  python tests/_distributed_worker.py mirrored <model_dir>
  python tests/_distributed_worker.py leo_mirrored <model_dir>   (LEO meta-training)
  python tests/_distributed_worker.py e2e_mirrored <dir>   (end-to-end LEO: 2 replicas vs 1)
  python tests/_distributed_worker.py e2e_prepare <dir>   (the tiny end-to-end inputs)
  TF_CONFIG=... python tests/_distributed_worker.py multi_worker <model_dir>
  TF_CONFIG=... python tests/_distributed_worker.py leo_multi_worker <output_dir> <root>
      (run_experiment on the embeddings under <root>; LEO_TEST_STEP_DELAY slows steps)
  TF_CONFIG=... python tests/_distributed_worker.py e2e_multi_worker <output_dir> <dir>
      (run_experiment, end-to-end, from what e2e_prepare wrote into <dir>)

Splitting the CPU into logical devices must happen before TensorFlow runs any op,
which is why this is a separate process. Prints one JSON line starting 'RESULT '.
"""

import functools
import json
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(kind: str, model_dir: str, *args) -> None:
  if kind in MODES:
    MODES[kind](model_dir, *args)
    return
  if kind in ("mirrored", "leo_mirrored", "e2e_mirrored"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  if kind == "leo_mirrored":
    meta_train(model_dir)
    return
  if kind == "e2e_mirrored":
    end_to_end_on_two_replicas(model_dir)
    return
  from _tiny_images import tiny_split  # pylint: disable=g-import-not-at-top
  from leo_tf.backbone import pretrain, wrn
  from leo_tf.runtime import strategy as strategy_lib

  strategy = strategy_lib.make_strategy(
      kind, devices=["/cpu:0", "/cpu:1"] if kind == "mirrored" else None)
  config = pretrain.PretrainConfig(batch_size=16, steps=30, steps_per_loop=5, log_every=5,
                                   holdout_fraction=0.2, checkpoint_every=10)
  result = pretrain.pretrain(tiny_split(), model_dir, config=config, strategy=strategy,
                             backbone_fn=functools.partial(wrn.build_wrn, depth=10, width=1))
  print("RESULT " + json.dumps({
      "replicas": strategy.num_replicas_in_sync,
      "losses": result.losses,
      "held_out_accuracy": result.held_out_accuracy,
      "backbone_path": result.backbone_path,
      "final_step": result.final_step,
  }), flush=True)


def meta_train(model_dir: str) -> None:
  """LEO meta-training on two replicas: each samples its own episodes inside the step."""
  from helpers import TINY_5WAY, synthetic_embeddings  # pylint: disable=g-import-not-at-top
  from leo_tf.leo.config import LEOConfig, TrainConfig
  from leo_tf.leo.trainer import MetaTrainer

  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  model = LEOConfig(**TINY_5WAY, inner_steps_train=1, finetune_steps_train=1)
  config = TrainConfig(num_steps=60, meta_batch_size=8, num_queries=3, outer_lr=3e-3,
                       log_every=20, validate_every=10**6, checkpoint_every=10**6)
  losses = []
  trainer = MetaTrainer(model, config, synthetic_embeddings(10, 8, dim=16), None, model_dir,
                        strategy=strategy, log=print,
                        on_step=lambda _, metrics: losses.append(metrics["query_loss"]))
  step = tf.constant(0, tf.int64)
  first, second = (trainer.replica_batch(step, r)["support"].numpy() for r in (0, 1))
  trainer.train()
  print("RESULT " + json.dumps({
      "replicas": strategy.num_replicas_in_sync,
      "replicas_differ": bool((first != second).any()),
      "first_losses": losses[:10], "last_losses": losses[-10:],
      "final_step": int(trainer.step.numpy()),
  }), flush=True)


def tiny_end_to_end(directory: str):
  """The EmbeddingSource and EndToEndConfig of the tiny end-to-end inputs in
  ``directory`` (written by write_tiny_end_to_end)."""
  from _tiny_images import tiny_source  # pylint: disable=g-import-not-at-top
  from leo_tf.data.source import EmbeddingSource
  from leo_tf.leo.end_to_end import EndToEndConfig
  return (EmbeddingSource(root=os.path.join(directory, "embeddings"), dataset="tiny"),
          EndToEndConfig(enabled=True, backbone=os.path.join(directory, "b.keras"),
                         image_source=tiny_source, learning_rate=1e-3))


def write_tiny_end_to_end(directory: str):
  """A tiny WRN's embeddings of every split of tiny_source, and that WRN, into
  ``directory``: what end-to-end LEO starts from. Returns the WRN."""
  from _tiny_images import tiny_source  # pylint: disable=g-import-not-at-top
  from leo_tf.backbone import embed, wrn
  source, config = tiny_end_to_end(directory)
  backbone = wrn.build_wrn(depth=10, width=1, input_shape=(None, None, 1))
  for split in ("train", "val", "test"):
    embed.write_split(backbone, tiny_source(split), source.root, source.folder, source.crop,
                      split)
  backbone.save(config.backbone)
  return backbone


def largest_change(before, after) -> float:
  """The largest absolute difference between two lists of weights."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(before, after))


def end_to_end_on_two_replicas(directory: str) -> None:
  """End-to-end LEO for three steps on two replicas, and on one device given the two
  replicas' episodes as one meta-batch (deterministic LEO: no noise to tell them apart).
  Prints the largest difference of any weight, and how far the backbone moved."""
  from helpers import tiny_leo, tiny_train  # pylint: disable=g-import-not-at-top
  from leo_tf.data.episodes import fold_seed
  from leo_tf.leo.end_to_end import EndToEnd
  from leo_tf.leo.trainer import MetaTrainer

  class OneDevice(MetaTrainer):
    def replica_batch(self, step, replica=0):
      local = self.config.meta_batch_size // 2
      parts = [self.train_sampler.sample(local, fold_seed(fold_seed(self.config.seed + 1, r),
                                                          step)) for r in (0, 1)]
      return {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]}

  backbone = write_tiny_end_to_end(directory)
  source, config = tiny_end_to_end(directory)
  splits = source.load_all()
  weights = {}
  for name, strategy, kind in (
      ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), MetaTrainer),
      ("one", tf.distribute.get_strategy(), OneDevice)):
    e2e = EndToEnd.create(config, source, splits, ("train",), strategy)
    trainer = kind(tiny_leo(stochastic=False, dropout_rate=0.0),
                   tiny_train(3, meta_batch_size=4, validate_every=10**6),
                   splits["train"], None, os.path.join(directory, name), strategy=strategy,
                   end_to_end=e2e)
    trainer.train()
    weights[name] = [v.numpy() for v in trainer.variables]
    replicas = weights.setdefault("replicas", strategy.num_replicas_in_sync)
  leo = len(trainer.model.trainable_variables)
  print("RESULT " + json.dumps({
      "replicas": replicas,
      "max_difference": largest_change(weights["two"], weights["one"]),
      "backbone_moved": largest_change(weights["one"][leo:], backbone.trainable_weights),
  }), flush=True)


def run_multi_worker(output_dir: str, model, train, source, log, **configs):
  """leo-train's run_experiment under MultiWorkerMirroredStrategy (TF_CONFIG), printing a
  'STEP <n> <query loss>' line per step (LEO_TEST_STEP_DELAY seconds apart). ``configs``:
  more RunConfigs fields. Returns the trainer, whose ``trained`` holds every weight of
  LEO and of an end-to-end backbone as training left them (before the chief's test)."""
  import time  # pylint: disable=g-import-not-at-top
  from leo_tf.leo import experiment
  from leo_tf.leo.evaluation import EvalConfig
  from leo_tf.leo.run import RunConfigs
  from leo_tf.leo.trainer import MetaTrainer
  from leo_tf.runtime.threads import Threads

  delay = float(os.environ.get("LEO_TEST_STEP_DELAY", "0"))
  trainers = []

  class Recording(MetaTrainer):
    def __init__(self, *a, **kw):
      super().__init__(*a, **kw)
      trainers.append(self)

    def train_step(self):
      time.sleep(delay)  # lets the test kill the workers mid-run
      metrics = super().train_step()
      print(f"STEP {int(self.step.numpy())} {metrics['query_loss']!r}", flush=True)
      return metrics

    def train(self, start=None):
      model = super().train(start)
      # The chief's test then loads the best checkpoint's backbone into this one.
      self.trained = [v.numpy() for v in self.model.weights + (
          self.end_to_end.backbone.weights if self.end_to_end else [])]
      return model

  experiment.MetaTrainer = Recording
  experiment.run_experiment(
      RunConfigs(model, train, EvalConfig(num_episodes=40, num_queries=3), source, Threads(),
                 (("kind", "multi_worker"),), **configs), output_dir, log=log)
  trainer, = trainers
  return trainer


def digest(arrays) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def multi_worker_meta_train(output_dir: str, root: str) -> None:
  """run_multi_worker on the synthetic embeddings under ``root``. Prints the RESULT with a
  digest of the weights and the lines saying where training resumed."""
  from helpers import TINY_5WAY, tiny_leo  # pylint: disable=g-import-not-at-top
  from leo_tf.data.source import EmbeddingSource
  from leo_tf.leo.config import TrainConfig

  resumed = []
  log = lambda line: (print(line, flush=True),
                      resumed.append(line) if "resumed from" in line else None)
  trainer = run_multi_worker(
      output_dir, tiny_leo(**TINY_5WAY),
      TrainConfig(num_steps=120, meta_batch_size=8, num_queries=3, outer_lr=3e-3,
                  log_every=10, validate_every=30, checkpoint_every=10,
                  num_val_episodes=40, val_batch_size=20, val_num_queries=3),
      EmbeddingSource(root=root, dataset="synthetic"), log)
  print("RESULT " + json.dumps({
      "chief": trainer.chief, "replicas": trainer.strategy.num_replicas_in_sync,
      "final_step": int(trainer.step.numpy()), "weights": digest(trainer.trained),
      "resumed": resumed}), flush=True)


def end_to_end_multi_worker(output_dir: str, directory: str) -> None:
  """run_multi_worker end-to-end from the tiny inputs in ``directory``: 6 steps, a
  validation and checkpoint at 3 and 6. Prints the RESULT with a digest of every weight
  (LEO's and the backbone's) and how far the backbone moved from its file."""
  import keras  # pylint: disable=g-import-not-at-top
  from helpers import tiny_leo, tiny_train
  source, config = tiny_end_to_end(directory)
  trainer = run_multi_worker(
      output_dir, tiny_leo(),
      tiny_train(6, meta_batch_size=4, validate_every=3, checkpoint_every=3, log_every=3),
      source, lambda line: print(line, flush=True), end_to_end=config)
  start = keras.saving.load_model(config.backbone, compile=False).weights
  leo = len(trainer.model.weights)  # then the backbone's, in the same order
  print("RESULT " + json.dumps({
      "chief": trainer.chief, "replicas": trainer.strategy.num_replicas_in_sync,
      "final_step": int(trainer.step.numpy()), "weights": digest(trainer.trained),
      "backbone_moved": largest_change(trainer.trained[leo:], start)}), flush=True)


MODES = {"leo_multi_worker": multi_worker_meta_train, "e2e_prepare": write_tiny_end_to_end,
         "e2e_multi_worker": end_to_end_multi_worker}


if __name__ == "__main__":
  main(*sys.argv[1:])
