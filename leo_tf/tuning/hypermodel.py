"""The keras-tuner HyperModel: a trial is a short LEO meta-training run.

``build(hp)`` declares the gin search space on ``hp`` and returns the trial's LEO model
(keras-tuner requires a Keras model: it sizes it and, for hyperband, loads the weights of
the trial being continued into it). ``fit`` runs our own meta-training loop
(``MetaTrainer``) with the trial's bindings applied on top of the base gin config; every
validation is reported to the tuner's callbacks as one epoch (``val_accuracy`` in the
logs, which drives keras-tuner's best-epoch checkpoint), and the best validation accuracy
is returned as the objective, which is what keras-tuner 1.4.8 hands to the oracle.

Each trial's TensorBoard run (its run directory's, ``RunDir.trial``) also gets its values and
objective as a TensorBoard HParams session, and the search's ``trials/`` folder the
HParams configuration: ``tensorboard --logdir <output_dir>/trials`` shows the search in
the HParams dashboard.
"""

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

import keras
import keras_tuner as kt
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from leo_tf import gin_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo.config import ConfigError
from leo_tf.leo.model import build_leo
from leo_tf.leo.run import RunConfigs
from leo_tf.leo.trainer import MetaTrainer, TrainingDivergedError
from leo_tf.runtime import files
from leo_tf.runtime.rundir import RunDir
from leo_tf.runtime.threads import Threads
from leo_tf.tuning.space import OBJECTIVE, SearchSpace, SearchSpaceError, TuneConfig

TRIAL_RECORD = "leo_trial.json"


@dataclasses.dataclass(frozen=True)
class TrialSetup:
  """What every trial shares: the base gin config, the space and the budget."""
  gin_files: Tuple[str, ...]
  bindings: Tuple[str, ...]
  space: SearchSpace
  tune: TuneConfig
  threads: Threads = Threads()

  def trial_bindings(self, values: Dict[str, Any], epochs: Optional[int] = None) -> List[str]:
    """Base bindings, then the budget, then the trial's values (later ones win)."""
    return (list(self.bindings) + self.tune.budget_bindings(epochs) +
            self.space.bindings(values))

  def apply(self, values: Dict[str, Any], epochs: Optional[int] = None) -> RunConfigs:
    """The configs of the trial's gin config (read in a scope: global gin is untouched)."""
    with gin_config.scoped(self.gin_files, self.trial_bindings(values, epochs)):
      configs = RunConfigs.from_gin()
    if configs.train.train_on_val:
      raise ConfigError("TrainConfig.train_on_val = True meta-trains on the validation "
                        "classes that score the trials; tune with it False")
    if not configs.train.select_on_val:
      raise ConfigError("TrainConfig.select_on_val = False runs no validation to score "
                        "trials on; tune with it True")
    return configs

  def check_extremes(self) -> None:
    """Fails before the search if a range end or choice is invalid for LEO's configs."""
    for param in self.space.params:
      ends = param.choices if param.scale == "choice" else (param.low, param.high)
      for value in ends:
        try:
          self.apply({param.binding: value})
        except ConfigError as e:
          raise SearchSpaceError(f"search space entry {param.describe()}: value {value!r} "
                                 f"is invalid: {e}") from None


class LEOHyperModel(kt.HyperModel):
  """LEO meta-training as a keras-tuner HyperModel (see the module docstring)."""

  def __init__(self, setup: TrialSetup):
    super().__init__(name="leo")
    self.setup = setup
    self._data: Dict[EmbeddingSource, Dict[str, EmbeddingSet]] = {}

  def _splits(self, values: Dict[str, Any], epochs: Optional[int] = None
              ) -> Tuple[RunConfigs, Dict[str, EmbeddingSet]]:
    """The trial's configs and embeddings, loaded once per source: every trial of a
    search normally shares one. Loaded under the trial's gin config, which a
    configured ``EmbeddingSource.builder`` reads if it has to build them."""
    configs = self.setup.apply(values, epochs)
    source = configs.source
    if source not in self._data:
      with gin_config.scoped(self.setup.gin_files, self.setup.trial_bindings(values, epochs)):
        self._data[source] = source.load_all(("train", "val"))
    return configs, self._data[source]

  def build(self, hp):
    configs, splits = self._splits(self.setup.space.declare(hp))
    return build_leo(configs.model, splits["train"].dim)

  def fit(self, hp, model, *args, callbacks=(), epochs: Optional[int] = None,
          initial_epoch: int = 0, **kwargs):
    """Meta-trains the trial; returns {'val_accuracy': best validation accuracy}."""
    tuner, trial = _tuner_and_trial(callbacks)
    trial_dir = tuner.get_trial_dir(trial.trial_id)
    values = self.setup.space.values(hp.values)
    total_epochs = epochs or self.setup.tune.max_epochs
    configs, splits = self._splits(values, epochs=total_epochs - initial_epoch)
    model_config, train_config = configs.model, configs.train
    os.makedirs(trial_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(trial_dir, "train.log"), "a") as log_file:
      try:
        trainer = self._trainer(model_config, train_config, splits, trial_dir, callbacks,
                                initial_epoch, log_file)
        if initial_epoch:  # hyperband continues an earlier trial: start from its weights
          trainer.model.set_weights(model.get_weights())
        trainer.callbacks.on_train_begin()
        trainer.train()
        trainer.callbacks.on_train_end()
      except (ConfigError, TrainingDivergedError) as e:
        # Bad values for this trial, not a bug: fail it without a retry.
        raise kt.errors.FailedTrialError(f"{type(e).__name__}: {e}") from e
    best = trainer.best_validation()
    # What the summary table shows beyond keras-tuner's own trial.json (and which tuner
    # ran the trial: a worker's name in a distributed search).
    files.atomic_write(os.path.join(trial_dir, TRIAL_RECORD), json.dumps(
        {"values": values, "steps": total_epochs * self.setup.tune.validate_every,
         "seconds": time.time() - start, OBJECTIVE: best, "tuner": tuner.tuner_id}))
    log_hparams(RunDir.trial(trial_dir).tensorboard, trial.trial_id, values, best)
    return {OBJECTIVE: best}

  def _trainer(self, model_config, train_config, splits, trial_dir, callbacks,
               initial_epoch, log_file) -> MetaTrainer:
    every = self.setup.tune.validate_every
    # The same initial weights for every trial: differences come from the values tried.
    keras.utils.set_random_seed(train_config.seed)  # as MetaTrainer seeds it

    def on_validation(step: int, result):
      epoch = initial_epoch + math.ceil(step / every) - 1
      trainer.callbacks.on_epoch_end(epoch, {OBJECTIVE: result.mean})

    run = RunDir.trial(trial_dir)
    if not run.newest("latest"):
      # Nothing to resume from: drop what an interrupted attempt left (e.g. its best record).
      shutil.rmtree(run, ignore_errors=True)
    trainer = MetaTrainer(
        model_config, train_config, splits["train"], splits["val"], run.path,
        on_validation=on_validation,
        log=lambda line: print(line, file=log_file, flush=True))
    trainer.callbacks = keras.callbacks.CallbackList(list(callbacks), model=trainer.model)
    return trainer


def _tuner_and_trial(callbacks):
  """The tuner and trial, from the callback keras-tuner adds to every trial."""
  for callback in callbacks:
    if hasattr(callback, "tuner") and hasattr(callback, "trial"):
      return callback.tuner, callback.trial
  raise ValueError("LEOHyperModel.fit runs inside a keras-tuner search: no tuner "
                   "callback among the callbacks it was given")


# The objective as a scalar beside the trial's validation curve (validation/accuracy).
HPARAMS_OBJECTIVE = f"tuning/{OBJECTIVE}"


def log_hparams(logdir: str, trial_id: str, values: Dict[str, Any], objective: float):
  """The trial as an HParams session in its TensorBoard run: its values, its objective."""
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    hparams_api.hparams(values, trial_id=f"trial_{trial_id}")
    tf.summary.scalar(HPARAMS_OBJECTIVE, objective, step=0)
  writer.close()


def log_hparams_config(logdir: str, space: SearchSpace):
  """The dashboard's columns: the tuned bindings, the objective and the validation curve."""
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    hparams_api.hparams_config(
        hparams=[hparams_api.HParam(p.binding) for p in space.params],
        metrics=[hparams_api.Metric(HPARAMS_OBJECTIVE, display_name=OBJECTIVE),
                 hparams_api.Metric("validation/accuracy", display_name="validation")])
  writer.close()


def read_record(trial_dir: str) -> Dict[str, Any]:
  path = os.path.join(trial_dir, TRIAL_RECORD)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
