"""Supervised pre-training of the backbone on the training classes, under tf.distribute.

The step (forward, loss, gradients, update) is kept apart from the loop that wraps it
in ``strategy.run``; the loop runs ``steps_per_loop`` steps per ``tf.function`` call,
checkpoints atomically through ``tf.train.CheckpointManager`` and resumes from the
latest checkpoint. The finished backbone (no head) is saved as ``backbone.keras``
beside the operative gin config.

``precision`` picks the Keras dtype policy (leo_tf.backbone.precision: float32,
mixed_bfloat16, or mixed_float16 with loss scaling); ``jit_compile`` compiles each
replica's forward and backward pass with XLA (the update and the replicas' all-reduce
stay outside it).
"""

import dataclasses
import math
import os
import time
from typing import Callable, List, Optional

import gin
import keras
import tensorflow as tf

from leo_tf import checkpoints, gin_config
from leo_tf.backbone import inputs, optim, precision as precision_lib, wrn
from leo_tf.config_checks import ConfigError, check_types, require_at_least, require_positive
from leo_tf.runtime import files, strategy as strategy_lib
from leo_tf.runtime.rundir import RunDir

BACKBONE_FILE = "backbone.keras"


@gin.configurable
@dataclasses.dataclass
class PretrainConfig:
  """Hyperparameters of the loop; the model, optimizer and augmentation have their own
  gin configurables (build_wrn, build_optimizer, learning_rate_schedule, augment)."""
  batch_size: int = 64              # global, summed over replicas
  epochs: float = 30.0
  steps: Optional[int] = None       # overrides epochs when set
  steps_per_loop: int = 10          # steps per tf.function call
  log_every: int = 50               # steps between progress lines
  label_smoothing: float = 0.0
  holdout_fraction: float = 0.1     # of the train examples, for held-out accuracy
  eval_every: int = 0               # steps; 0 = only at the end
  checkpoint_every: int = 500       # steps
  max_checkpoints: int = 2
  cache: bool = True
  shuffle_buffer: int = 10000
  seed: int = 0
  precision: str = "float32"        # or "mixed_bfloat16", "mixed_float16"
  jit_compile: bool = False         # XLA for each replica's forward + backward pass

  def __post_init__(self):
    check_types(self)
    require_at_least(self, 1, "batch_size", "steps_per_loop", "log_every",
                     "checkpoint_every", "max_checkpoints")
    require_at_least(self, 0, "eval_every", "shuffle_buffer")
    require_positive(self, "epochs")
    if not 0.0 <= self.holdout_fraction < 1.0:
      raise ConfigError("PretrainConfig.holdout_fraction must be in [0, 1), got "
                        f"{self.holdout_fraction}")
    precision_lib.check(self.precision, "PretrainConfig.precision")


@dataclasses.dataclass
class PretrainResult:
  initial_step: int                 # > 0 when the run resumed from a checkpoint
  final_step: int
  losses: List[float]               # mean training loss of each logged interval
  train_accuracy: float             # over the last logged interval
  held_out_accuracy: Optional[float]
  seconds: float
  backbone_path: str


def total_steps(config: PretrainConfig, num_train_examples: int) -> int:
  if config.steps:
    return int(config.steps)
  return max(1, int(math.ceil(config.epochs * num_train_examples / config.batch_size)))


def _write_operative_config(run: RunDir) -> None:
  # The operative config lists only what was used; the full one lets a resume re-parse.
  gin_config.save_config(run.operative_config, operative=True)
  gin_config.save_config(run.config)


def _correct(logits, labels):
  return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                               tf.float32))


class _Loop:
  """The distributed train/eval functions for one model and optimizer."""

  def __init__(self, strategy, model, optimizer, global_batch, label_smoothing,
               jit_compile=False):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.global_batch = global_batch
    self.label_smoothing = label_smoothing
    # XLA cannot compile the iterator or the update's cross-replica merge: only this.
    self._gradients = tf.function(self._gradients, jit_compile=True) if jit_compile else (
        self._gradients)

  def _loss(self, labels, logits):
    logits = tf.cast(logits, tf.float32)  # a 16-bit softmax loses the small probabilities
    num_classes = tf.shape(logits)[-1]
    per_example = tf.nn.softmax_cross_entropy_with_logits(
        tf.one_hot(labels, num_classes) * (1 - self.label_smoothing) +
        self.label_smoothing / tf.cast(num_classes, tf.float32), logits)
    # Divide by the global batch: replica gradients are summed by the all-reduce.
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
    if self.model.losses:
      loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
    return loss

  def _gradients(self, images, labels):
    """Loss, gradients (of the scaled loss under mixed_float16) and number correct."""
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      loss = self._loss(labels, logits)
      scaled = self.optimizer.scale_loss(loss)  # the loss itself unless loss-scaled
    grads = tape.gradient(scaled, self.model.trainable_variables)
    return loss, grads, _correct(logits, labels)

  def _step(self, images, labels):
    loss, grads, correct = self._gradients(images, labels)
    # A LossScaleOptimizer unscales, and skips a step whose gradients overflowed.
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return loss, correct

  def _sum(self, per_replica):
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  @tf.function
  def train(self, iterator, num_steps):
    """``num_steps`` steps; returns the summed mean loss and the number correct."""
    loss_sum = tf.constant(0.0)
    correct = tf.constant(0.0)
    for _ in tf.range(num_steps):
      images, labels = next(iterator)
      loss, hits = self.strategy.run(self._step, args=(images, labels))
      loss_sum += self._sum(loss)
      correct += self._sum(hits)
    return loss_sum, correct

  def _eval_step(self, images, labels):
    logits = self.model(images, training=False)
    return _correct(logits, labels), tf.cast(tf.size(labels), tf.float32)

  @tf.function
  def _eval_batch(self, images, labels):
    hits, n = self.strategy.run(self._eval_step, args=(images, labels))
    return self._sum(hits), self._sum(n)

  def evaluate(self, dist_dataset) -> Optional[float]:
    hits, n = 0.0, 0.0
    for images, labels in dist_dataset:
      h, c = self._eval_batch(images, labels)
      hits, n = hits + float(h), n + float(c)
    return hits / n if n else None


@gin.configurable(denylist=["train_split", "model_dir"])
def pretrain(train_split, model_dir: str,
             config: Optional[PretrainConfig] = None,
             backbone_fn: Callable[..., keras.Model] = wrn.build_wrn,
             strategy: Optional[tf.distribute.Strategy] = None,
             log: Callable[[str], None] = print) -> PretrainResult:
  """Trains ``backbone_fn()`` + a linear head on ``train_split``'s classes.

  Resumes from the latest checkpoint in ``model_dir``; when the run is finished
  already, it only re-evaluates and returns.
  """
  config = config or PretrainConfig()
  strategy = strategy or strategy_lib.make_strategy()
  writes = RunDir(model_dir).for_process(strategy)  # model_dir, or a worker folder of it
  out_dir = writes.path
  os.makedirs(out_dir, exist_ok=True)
  tag = strategy_lib.worker_tag(strategy)
  num_steps = total_steps(config, train_split.num_examples)
  num_classes = len(train_split.class_names)
  channels = inputs.image_channels(train_split)

  with strategy.scope(), precision_lib.policy(config.precision):
    backbone = backbone_fn(input_shape=(None, None, channels))
    model = wrn.add_classifier_head(backbone, num_classes)
    optimizer = precision_lib.scaled_optimizer(optim.build_optimizer(num_steps),
                                               config.precision)
    optimizer.build(model.trainable_variables)
    train_loss = keras.metrics.Mean("loss")
    train_acc = keras.metrics.Mean("accuracy")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "checkpoints"),
                                         max_to_keep=config.max_checkpoints)
  # Newest readable checkpoint; a damaged one falls back with a warning (reliability.md).
  restored = checkpoints.restore_latest(checkpoint, manager.directory, manager, log=log)
  initial_step = int(optimizer.iterations.numpy())
  if initial_step:
    log(f"{tag}resumed from {restored} at step {initial_step}/{num_steps}")
  log(f"{tag}pre-training {backbone.name} ({wrn.count_params(backbone):,} parameters) on "
      f"{num_classes} classes, {strategy.num_replicas_in_sync} replica(s), "
      f"{num_steps} steps of {config.batch_size}"
      + (f", {config.precision}" if config.precision != "float32" else "")
      + (", XLA" if config.jit_compile else ""))
  _write_operative_config(writes)

  loop = _Loop(strategy, model, optimizer, config.batch_size, config.label_smoothing,
               config.jit_compile)
  # Reseeding with the step keeps a resumed run from replaying the first epoch's order.
  train_ds = inputs.train_dataset(train_split, config.batch_size, config.seed + initial_step,
                                  config.holdout_fraction, config.cache, config.shuffle_buffer)
  iterator = iter(strategy.experimental_distribute_dataset(train_ds))
  eval_ds = None
  if config.holdout_fraction > 0:
    eval_ds = strategy.experimental_distribute_dataset(
        inputs.eval_dataset(train_split, config.batch_size, config.holdout_fraction))

  losses, held_out, train_accuracy, start = [], None, float("nan"), time.time()
  step, tick, seen = initial_step, time.time(), 0
  while step < num_steps:
    n = min(config.steps_per_loop, num_steps - step)
    loss_sum, correct = loop.train(iterator, tf.constant(n))
    train_loss.update_state(loss_sum / n, sample_weight=n)
    train_acc.update_state(correct / (n * config.batch_size), sample_weight=n)
    step, seen = step + n, seen + n * config.batch_size
    if step % config.log_every < n or step == num_steps:
      losses.append(float(train_loss.result()))
      train_accuracy = float(train_acc.result())
      log(f"{tag}step {step}/{num_steps} training loss {losses[-1]:.4f} training accuracy "
          f"{train_accuracy:.3f} lr {float(optimizer.learning_rate):.4g} "
          f"{seen / (time.time() - tick):,.0f} examples/s")
      train_loss.reset_state()
      train_acc.reset_state()
      tick, seen = time.time(), 0
    if config.eval_every and eval_ds is not None and step % config.eval_every < n:
      held_out = loop.evaluate(eval_ds)
      if held_out is not None:
        log(f"{tag}step {step} held-out accuracy {held_out:.3f}")
    if step % config.checkpoint_every < n or step == num_steps:
      manager.save(checkpoint_number=step)
  trained = (step - initial_step) * config.batch_size
  if trained:
    log(f"{tag}trained {step - initial_step} steps ({trained:,} examples) in "
        f"{time.time() - start:.0f} s: {trained / (time.time() - start):,.0f} examples/s "
        "(what to size PretrainConfig.epochs from)")
  if eval_ds is not None:
    held_out = loop.evaluate(eval_ds)
    if held_out is None:
      log(f"{tag}no held-out examples: holdout_fraction {config.holdout_fraction} of "
          f"{train_split.num_examples} examples selected none")
    else:
      log(f"{tag}held-out accuracy {held_out:.3f} (on the {config.holdout_fraction:.0%} of "
          "the training classes' examples kept out of training; the training accuracy "
          "above is on augmented training batches)")
  backbone_path = os.path.join(out_dir, BACKBONE_FILE)
  with files.atomic_path(backbone_path, backbone_path[:-len(".keras")] + ".tmp.keras") as tmp:
    backbone.save(tmp)
  _write_operative_config(writes)
  return PretrainResult(initial_step, step, losses, train_accuracy, held_out,
                        time.time() - start, backbone_path)
