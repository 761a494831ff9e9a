"""Meta-training of LEO: the outer step, checkpoints, validation, summaries.

The outer step is one ``tf.function``: each replica runs the vectorised model on its
share of the meta-batch (the inner-loop ``tf.GradientTape`` nests inside the outer one),
gradients are summed across replicas, clipped per tensor (by value, then by norm), and
applied with Adam (epsilon 1e-8, TF1's default, as the authors ran it). A non-finite loss
or gradient applies instead the gradient of 0.5 * guard_l2_weight * sum w^2, clipped like
any gradient (the authors' guard: their (1e-4 / lambda1) * L2); such steps are counted
(in a row and in total, both checkpointed) and too many in a row stop training with an
error.

Crash safety (docs/reliability.md): ``restore`` falls back to the previous checkpoint
when the newest is unreadable; a new best-on-validation checkpoint is committed in two
phases so ``best/best.json`` always describes the checkpoint in ``best/``. Episodes and
dropout seeds are functions of (seed, step), so a resumed run repeats the losses of an
uninterrupted one exactly.

Under MultiWorkerMirroredStrategy only the chief writes into ``output_dir`` (checkpoints,
TensorBoard, ``best.json``); the other workers save their checkpoints into a temporary
worker folder of it (``RunDir.for_process``: saving is a collective step, as in TF's
multi-worker guide) and delete it, and write no summaries. Every worker restores from the chief's
checkpoints, and decisions taken from files or local measurements (the step resumed
from, the best validation so far, whether a validation is a new best) are the chief's,
broadcast (runtime.strategy.from_chief), so the workers never part ways.
"""

import shutil
import time
from typing import Callable, Dict, Optional

import keras
import tensorflow as tf

from leo_tf import checkpoints
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler, VariableEpisodes, fold_seed
from leo_tf.leo.config import ConfigError, LEOConfig, TrainConfig
from leo_tf.leo.end_to_end import EndToEnd, check_end_to_end, row_numbers
from leo_tf.leo.evaluation import EvalResult, evaluate, predictor
from leo_tf.leo.model import LEO, build_leo, task_losses
from leo_tf.leo import weights
from leo_tf.runtime import strategy as strategy_lib
from leo_tf.runtime.rundir import RunDir


class TrainingDivergedError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


# The outputs of LEO.call that the outer step reads: one value per task.
PER_TASK_OUTPUTS = ("query_loss", "kl", "encoder_penalty", "accuracy")


def task_group_sizes(tasks: int, groups: int):
  """Sizes of ``min(groups, tasks)`` groups of consecutive tasks, as equal as possible."""
  groups = min(groups, tasks)
  return [tasks // groups + (1 if g < tasks % groups else 0) for g in range(groups)]


def clip_gradient(grad: tf.Tensor, clip_value: float, clip_norm: float) -> tf.Tensor:
  """Per tensor: clip by value, then by norm (0 disables either)."""
  if clip_value > 0:
    grad = tf.clip_by_value(grad, -clip_value, clip_value)
  if clip_norm > 0:
    grad = tf.clip_by_norm(grad, clip_norm)
  return grad


def all_finite(tensors) -> tf.Tensor:
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


class MetaTrainer:
  """Owns the model, optimizer and checkpoints of one meta-training run."""

  def __init__(self, model_config: LEOConfig, config: TrainConfig, train_data: EmbeddingSet,
               val_data: Optional[EmbeddingSet], output_dir: str,
               strategy: Optional[tf.distribute.Strategy] = None,
               log: Callable[[str], None] = print,
               on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
               on_validation: Optional[Callable[[int, EvalResult], None]] = None,
               episodes: Optional[VariableEpisodes] = None,
               end_to_end: Optional[EndToEnd] = None):
    """``on_step(step, metrics)`` is called after every outer step (exact float values),
    ``on_validation(step, result)`` after each validation has been logged and, if it is
    the best so far, checkpointed (leo-tune reports it to keras-tuner). ``episodes``:
    variable episodes for meta-training and/or validation (its ``uses``). ``end_to_end``:
    the backbone learns too; the data are then the frozen embeddings of its images."""
    if config.deterministic_ops:  # process-wide (docs/reliability.md)
      tf.config.experimental.enable_op_determinism()
    self.model_config = model_config
    self.on_step = on_step
    self.on_validation = on_validation
    self.config = config
    self.end_to_end = end_to_end
    self.run = RunDir(output_dir).prepare()
    self.strategy = strategy or tf.distribute.get_strategy()
    self.chief = strategy_lib.is_chief(self.strategy)
    tag = strategy_lib.worker_tag(self.strategy)
    self.log = (lambda message: log(tag + message)) if tag else log
    self.writes = self.run.for_process(self.strategy)  # the run, or a worker folder
    replicas = self.strategy.num_replicas_in_sync
    if config.meta_batch_size % replicas:
      raise ConfigError(f"meta_batch_size {config.meta_batch_size} must divide evenly "
                        f"across {replicas} replicas")
    self.train_sampler = EpisodeSampler.for_model(
        row_numbers(train_data) if end_to_end else train_data, model_config,
        config.num_queries, episodes, "train")
    self._val_sampler = lambda data: EpisodeSampler.for_model(
        data, model_config, config.val_num_queries, episodes, "val")
    self.val_data = val_data
    self.val_sampler = self._val_sampler(val_data) if val_data is not None else None
    keras.utils.set_random_seed(config.seed)  # Python's RNG too: Keras's initialisers use it
    with self.strategy.scope():
      self.model = build_leo(model_config, train_data.dim)
      self.model.input_gradients = end_to_end is not None
      self.optimizer = keras.optimizers.Adam(config.outer_lr, epsilon=config.adam_epsilon)
      self.optimizer.build(self.model.trainable_variables)
      self.step, self.bad_steps, self.guarded_steps = (
          tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
          for name in ("step", "bad_steps", "guarded_steps"))
      self.checkpoint = tf.train.Checkpoint(
          model=self.model, optimizer=self.optimizer, step=self.step,
          bad_steps=self.bad_steps, guarded_steps=self.guarded_steps,
          **{checkpoints.MODEL_VARIABLES: checkpoints.named_variables(self.model)},
          **(end_to_end.checkpoint_entries() if end_to_end else {}))
    self.latest, self.best = (
        tf.train.CheckpointManager(self.checkpoint, self.writes.checkpoints(kind), keep)
        for kind, keep in (("latest", 2), ("best", 1)))
    self._best_record = checkpoints.BestRecord(self.run.best_record)
    self._best_seen = -1.0  # the chief's best validation accuracy, set by restore()
    # The traced outer step (public for inspection: tools/bench counts its FLOPs).
    self.step_function = tf.function(self._outer_step, jit_compile=config.jit_compile)
    self._metric_names = self._val_predict = self._summary_writer = None

  @property
  def _writer(self):
    """Created at the first summary, so a rerun that fails a check writes nothing; a
    no-op writer on the workers other than the chief."""
    if self._summary_writer is None:
      self._summary_writer = (
          tf.summary.create_file_writer(self.run.tensorboard)
          if self.chief else tf.summary.create_noop_writer())
    return self._summary_writer

  # ------------------------------------------------------------------ the outer step

  def replica_batch(self, step, replica=0) -> Dict[str, tf.Tensor]:
    """The episodes replica ``replica`` trains on at ``step``: a pure function of
    (seed, replica, step), so a resumed run sees the same ones."""
    local = self.config.meta_batch_size // self.strategy.num_replicas_in_sync
    stream = fold_seed(self.config.seed + 1, replica)
    return self.train_sampler.sample(local, fold_seed(stream, step))

  def _replica_step(self, step):
    """Loss and gradients of one replica's share, pre-scaled so a SUM gives the mean.

    The replica samples its episodes inside the step: a tf.data iterator would cost a
    Python round trip per step and a pipeline thread competing for the same cores
    (~2.5 ms of a 1-shot step, docs/performance.md)."""
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync
    batch = self.replica_batch(step, ctx.replica_id_in_sync_group)
    seed = fold_seed(fold_seed(self.config.seed, step), ctx.replica_id_in_sync_group)
    variables = self.variables
    with tf.GradientTape() as tape:
      outputs = self._grouped_forward(batch, seed)
      per_task = task_losses(outputs, self.model_config)
      reg = self.model.regularization()
      loss = (tf.reduce_sum(per_task) / self.config.meta_batch_size +
              tf.add_n(list(reg.values())) / replicas)
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    share = lambda x: tf.reduce_sum(x) / self.config.meta_batch_size
    metrics = dict(loss=loss, **{k: share(outputs[k]) for k in PER_TASK_OUTPUTS},
                   **{k: v / replicas for k, v in reg.items()})
    return grads, metrics

  def _sum_over_replicas(self, step):
    """The replicas' gradients and metrics summed, as one flat vector: one all-reduce a
    step (MultiWorkerMirroredStrategy cannot reduce a list of differently shaped
    tensors, and one large collective is cheaper than one per variable)."""
    keys = []
    def replica_vector(step):
      grads, metrics = self._replica_step(step)
      keys[:] = sorted(metrics)
      return tf.concat([tf.reshape(t, [-1]) for t in grads + [metrics[k] for k in keys]], 0)
    total = self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 self.strategy.run(replica_vector, args=(step,)), axis=None)
    variables = self.variables
    parts = tf.split(total, [v.shape.num_elements() for v in variables] + [1] * len(keys))
    grads = [tf.reshape(p, v.shape) for p, v in zip(parts, variables)]
    return grads, {k: tf.reshape(p, []) for k, p in zip(keys, parts[len(variables):])}

  @property
  def variables(self):
    """What the outer step trains: LEO's variables, then the backbone's (end-to-end)."""
    return self.model.trainable_variables + (self.end_to_end.variables if self.end_to_end else [])

  def _forward(self, batch, seed):
    if self.end_to_end:  # sampled rows to their images' features, per group: in parallel
      batch = self.end_to_end.features(batch)
    return self.model(batch, training=True, seed=seed)

  def _grouped_forward(self, batch, seed) -> Dict[str, tf.Tensor]:
    """The training forward pass of a replica's tasks as independent groups (task_groups):
    per-task outputs, concatenated in task order. Group g draws its noise from
    fold_seed(seed, g); a single group uses ``seed`` itself."""
    sizes = task_group_sizes(batch["support"].shape[0], self.config.task_groups)
    if len(sizes) == 1:
      return self._forward(batch, seed)
    parts = {k: tf.split(v, sizes) for k, v in batch.items()}
    outputs = [self._forward({k: v[g] for k, v in parts.items()}, fold_seed(seed, g))
               for g in range(len(sizes))]
    return {k: tf.concat([o[k] for o in outputs], axis=0) for k in PER_TASK_OUTPUTS}

  def guard_gradients(self):
    """What a non-finite step applies: d/dw of 0.5 * guard_l2_weight * sum w^2 over the
    network weights (zero for the step sizes), i.e. guard_l2_weight * w, clipped."""
    network = {id(v) for v in self.model.network_variables()}
    c = self.config
    return [clip_gradient(c.guard_l2_weight * tf.convert_to_tensor(v), c.clip_value,
                          c.clip_norm) if id(v) in network else tf.zeros_like(v)
            for v in self.model.trainable_variables]

  def _outer_step(self):
    step = self.step.read_value()
    grads, metrics = self._sum_over_replicas(step)
    # Checked before clipping: clipping by value would turn an infinite gradient finite.
    finite = tf.logical_and(tf.math.is_finite(metrics["loss"]), all_finite(grads))
    leo = len(self.model.trainable_variables)
    grads, backbone_grads = grads[:leo], grads[leo:]  # the backbone: its own optimizer
    grads = [clip_gradient(g, self.config.clip_value, self.config.clip_norm) for g in grads]
    grads = [tf.where(finite, g, s) for g, s in zip(grads, self.guard_gradients())]
    self.optimizer.apply(grads, self.model.trainable_variables)
    if self.end_to_end:
      self.end_to_end.apply(backbone_grads, finite)
    self.step.assign_add(1)
    self.bad_steps.assign(tf.where(finite, tf.constant(0, tf.int64), self.bad_steps + 1))
    self.guarded_steps.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
    metrics["finite"] = tf.cast(finite, tf.float32)
    metrics["bad_steps"] = tf.cast(self.bad_steps, tf.float32)
    # One vector, so the host fetches a step's metrics in one transfer (~1 ms a step
    # saved at 1-shot against a fetch per metric); its order is fixed while tracing.
    self._metric_names = sorted(metrics)
    return tf.stack([metrics[k] for k in self._metric_names])

  def train_step(self) -> Dict[str, float]:
    """Runs one outer step; returns its metrics (``finite`` is 1.0 or 0.0,
    ``bad_steps`` the non-finite steps in a row so far)."""
    values = self.step_function().numpy().tolist()
    return dict(zip(self._metric_names, values))

  # ------------------------------------------------------------------ the loop

  def restore(self) -> int:
    """Restores the newest readable checkpoint if any; returns the step to continue from.

    Raises CheckpointMismatchError when the checkpoint belongs to another model
    configuration, CorruptCheckpointError when none of the checkpoints can be read;
    either leaves the run directory as it was. Only then are interrupted writes
    tidied: a new-best commit finished or undone, stale ``*_temp`` folders removed.
    """
    variables = checkpoints.named_variables(self.model)
    path = checkpoints.restore_latest(  # the chief's checkpoints, on every worker
        self.checkpoint, self.run.checkpoints("latest"),
        self.latest if self.chief else None,
        verify=lambda p: (weights.check_compatible(p, variables, self.model.dim),
                          check_end_to_end(p, self.end_to_end is not None)),
        log=self.log)
    if self.chief:
      self._best_record.recover(self.best.latest_checkpoint)
      for directory in (self.latest.directory, self.best.directory):
        checkpoints.remove_stale_temps(directory, self.log)
    self._check_workers_agree()  # reads best.json: a damaged one fails here, not later
    if path:
      self.log(f"[train] resumed from {path} at step {int(self.step.numpy())}"
               + (f" ({int(self.guarded_steps.numpy())} non-finite steps guarded so far)"
                  if int(self.guarded_steps.numpy()) else ""))
    elif self.config.warm_start:
      start = RunDir(self.config.warm_start, "TrainConfig.warm_start")
      path = weights.restore_weights(self.model, start, start.choose("best", fallback=True),
                                     self.log)
      self.log(f"[train] LEO's weights from {path} (TrainConfig.warm_start)")
    return int(self.step.numpy())

  def _check_workers_agree(self):
    """Every worker must resume from the chief's step, and all take the chief's best."""
    step = int(self.step.numpy())
    chief_step, self._best_seen = strategy_lib.from_chief(
        self.strategy, [step, self.best_validation() if self.chief else -1.0])
    if strategy_lib.any_worker(self.strategy, step != chief_step):
      raise checkpoints.CorruptCheckpointError(
          f"the workers restored different steps (this one {step}, the chief "
          f"{int(chief_step)}) from {self.run.checkpoints('latest')}: every "
          "worker must read the chief's output_dir (a shared filesystem)")

  def _save(self, manager: tf.train.CheckpointManager, step: int):
    """Saves a checkpoint; a non-chief worker then drops its temporary copy."""
    manager.save(checkpoint_number=step)
    if not self.chief:
      shutil.rmtree(self.writes, ignore_errors=True)

  def best_validation(self) -> float:
    """The accuracy in ``best/best.json``; -1 without one (a damaged record raises,
    checked by :meth:`restore`, so before training rather than at its end)."""
    return self._best_record.accuracy()

  def validate(self) -> Optional[EvalResult]:
    if self.val_sampler is None:
      return None
    sampler = self.val_sampler
    if self.end_to_end:  # the current backbone's features of the val images
      sampler = self._val_sampler(self.end_to_end.extract("val", self.val_data))
    if self._val_predict is None or sampler is not self.val_sampler and sampler.all_queries:
      self._val_predict = predictor(self.model, sampler)  # traced once, where it can be
    return evaluate(self.model, sampler, self.config.num_val_episodes,
                    self.config.val_batch_size, seed=self.config.seed + 2,
                    predict=self._val_predict)

  def _after_validation(self, step: int, result: EvalResult):
    with self._writer.as_default(step=step):
      tf.summary.scalar("validation/accuracy", result.mean)
    # The chief's accuracy decides on every worker (the same on CPU, maybe not on GPUs).
    accuracy, = strategy_lib.from_chief(self.strategy, [result.mean])
    marker = ""
    if accuracy > self._best_seen:
      if self.chief:
        self._best_record.begin(step, result.mean, result.ci95)
      self._save(self.best, step)
      if self.chief:
        self._best_record.commit()
      self._best_seen = accuracy
      marker = " (new best)"
    self.log(f"[validate] step {step}: accuracy {result}{marker}")

  def train(self, start: Optional[int] = None) -> LEO:
    """Meta-trains until ``num_steps`` from step ``start``, what :meth:`restore`
    returned (by default it restores the latest checkpoint first)."""
    cfg = self.config
    step = self.restore() if start is None else start
    if step >= cfg.num_steps:
      self.log(f"[train] already at step {step} >= {cfg.num_steps}; nothing to do")
      return self.model
    window, window_start, sums = 0, time.time(), {}
    while step < cfg.num_steps:
      metrics = self.train_step()
      bad = int(metrics.pop("bad_steps"))
      step += 1
      if self.on_step is not None:
        self.on_step(step, metrics)
      window += 1
      # Guarded (non-finite) steps are counted, not averaged into the losses.
      for k, v in metrics.items() if metrics["finite"] else [("finite", 0.0)]:
        sums[k] = sums.get(k, 0.0) + v
      sums["steps"] = sums.get("steps", 0.0) + metrics["finite"]
      if bad >= cfg.max_bad_steps:
        self._save(self.latest, step)
        raise TrainingDivergedError(
            f"{bad} consecutive meta-training steps had a non-finite loss or gradient "
            f"(last at step {step}, {int(self.guarded_steps.numpy())} in total); the "
            "weights were protected by the L2-only guard. "
            "Lower TrainConfig.outer_lr or check the embeddings for extreme values.")
      if step % cfg.log_every == 0 or step == cfg.num_steps:
        finite_steps = max(sums.pop("steps"), 1.0)
        means = {k: v / finite_steps for k, v in sums.items()}
        means["finite"] = sums.get("finite", 0.0) / window
        self._log_progress(step, means, window / (time.time() - window_start))
        window, window_start, sums = 0, time.time(), {}
      if step % cfg.validate_every == 0 or step == cfg.num_steps:
        result = self.validate()
        if result is not None:
          self._after_validation(step, result)
          if self.on_validation is not None:
            self.on_validation(step, result)
      if step % cfg.checkpoint_every == 0 or step == cfg.num_steps:
        self._save(self.latest, step)
    self._writer.flush()
    return self.model

  def _log_progress(self, step: int, means: Dict[str, float], steps_per_s: float):
    nan = float("nan")
    total = int(self.guarded_steps.numpy())
    with self._writer.as_default(step=step):
      for name, value in means.items():
        tf.summary.scalar(f"train/{name}", value)
      for name in ("inner_lr", "finetune_lr"):
        rates = getattr(self.model, name)
        tf.summary.histogram(f"learning_rates/{name}", rates)
        tf.summary.scalar(f"learning_rates/{name}_mean", tf.reduce_mean(rates))
      tf.summary.scalar("train/guarded_steps_total", total)
    skipped = (1.0 - means.get("finite", 1.0))
    self.log(
        f"[train] step {step}/{self.config.num_steps} loss {means.get('loss', nan):.4f} "
        f"(query {means.get('query_loss', nan):.4f} kl {means.get('kl', nan):.3f} "
        f"enc-pen {means.get('encoder_penalty', nan):.2e} l2 {means.get('l2', nan):.2e} "
        f"orth {means.get('orthogonality', nan):.2e}) acc {means.get('accuracy', nan):.3f} | "
        f"{steps_per_s:.1f} steps/s, {steps_per_s * self.config.meta_batch_size:.0f} "
        f"episodes/s" + (f" | {100 * skipped:.0f}% non-finite steps guarded ({total} in total)"
                         if skipped else ""))
