"""One experiment: load (or build) embeddings, meta-train, evaluate. What leo-train runs."""

import dataclasses
import os
import time
from typing import Callable, Optional

import gin
import tensorflow as tf

from leo_tf import gin_config, threads
from leo_tf.backbone.strategy import make_strategy
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.evaluation import EvalConfig, EvalResult, evaluate
from leo_tf.leo.trainer import MetaTrainer, TrainConfig, load_model


@dataclasses.dataclass
class ExperimentResult:
  output_dir: str
  test: Optional[EvalResult]
  best_validation: float


def test_result(model, data: EmbeddingSet, model_config: LEOConfig, eval_config: EvalConfig,
                log: Callable[[str], None]) -> EvalResult:
  sampler = EpisodeSampler(data, model_config.num_classes, model_config.num_shots,
                           eval_config.num_queries)
  log(f"[eval] {eval_config.num_episodes} {eval_config.split} episodes, "
      f"{model_config.num_classes}-way {model_config.num_shots}-shot, "
      f"{sampler.num_queries if eval_config.num_queries else 'all remaining'} "
      "queries per class")
  return evaluate(model, sampler, eval_config.num_episodes, eval_config.batch_size,
                  eval_config.seed, log=log, label="eval")


@gin.configurable
def run_experiment(output_dir: str = gin.REQUIRED, evaluate_test: bool = True,
                   log: Callable[[str], None] = print
                   ) -> ExperimentResult:
  """Meta-trains LEO on the configured embeddings and evaluates the best checkpoint.

  The tf.distribute strategy is ``make_strategy()``'s, bound in gin
  (``make_strategy.kind = 'mirrored'``), as for backbone pre-training.
  """
  source, model_config = EmbeddingSource(), LEOConfig()
  train_config, eval_config = TrainConfig(), EvalConfig()
  start = time.time()
  splits = source.load_all(("train", "val", eval_config.split))
  log(f"[data] {source.dataset}/{source.crop}: " + ", ".join(
      f"{s} {d.embeddings.shape[0]} x {d.dim} ({d.num_classes} classes)"
      for s, d in splits.items()))
  train, val = splits["train"], splits["val"]
  if train_config.train_on_val:
    train, val = EmbeddingSet.concatenate([train, val]), None
    log("[data] meta-training on train + val (no validation, the last step is kept)")
  os.makedirs(output_dir, exist_ok=True)
  gin_config.save_config(output_dir)
  # Before meta-training's first op (loading the files runs none). If the embeddings were
  # just built (pre-training), TF has started with its default pools: configure() logs it.
  threads.configure(log=log)
  trainer = MetaTrainer(model_config, train_config, train, val, output_dir,
                        strategy=make_strategy(), log=log)
  trainer.train()
  gin_config.save_config(output_dir, operative=True)
  log(f"[train] done in {time.time() - start:.0f} s; checkpoints in {output_dir}")
  result = ExperimentResult(output_dir, None, trainer.best_validation())
  if evaluate_test:
    which = "best" if val is not None and trainer.best.latest_checkpoint else "latest"
    model = load_model(output_dir, model_config, train.dim, which)
    result.test = test_result(model, splits[eval_config.split], model_config,
                              eval_config, log)
    log(f"[result] {which} checkpoint, {eval_config.split}: accuracy {result.test}")
  return result
