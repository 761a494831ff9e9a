"""One experiment: load (or build) embeddings, meta-train, evaluate. What leo-train runs."""

import contextlib
import dataclasses
import time
from typing import Callable, Optional

import gin

from leo_tf import gin_config
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler, VariableEpisodes
from leo_tf.leo import weights
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.end_to_end import EndToEnd
from leo_tf.leo.evaluation import EvalConfig, EvalResult, evaluate
from leo_tf.leo.run import RunConfigs
from leo_tf.leo.trainer import MetaTrainer
from leo_tf.runtime import lock, strategy as strategy_lib, threads
from leo_tf.runtime.rundir import RunDir


@dataclasses.dataclass
class ExperimentResult:
  output_dir: str
  test: Optional[EvalResult]
  best_validation: float


def test_result(model, data: EmbeddingSet, model_config: LEOConfig, eval_config: EvalConfig,
                log: Callable[[str], None],
                episodes: Optional[VariableEpisodes] = None) -> EvalResult:
  sampler = EpisodeSampler.for_model(data, model_config, eval_config.num_queries, episodes)
  log(f"[eval] {eval_config.num_episodes} {eval_config.split} episodes, {sampler.shape}")
  return evaluate(model, sampler, eval_config.num_episodes, eval_config.batch_size,
                  eval_config.seed, log=log, label="eval")


@gin.configurable
def run_experiment(configs: RunConfigs, output_dir: str = gin.REQUIRED,
                   evaluate_test: bool = True,
                   after_test: Optional[Callable[..., object]] = None,
                   log: Callable[[str], None] = print) -> ExperimentResult:
  """Meta-trains LEO as ``configs`` say and evaluates the best checkpoint.

  ``after_test(output_dir, log=log)``, when bound (e.g. ``@compare_to_baselines``), runs
  after the test evaluation, on the chief.

  The tf.distribute strategy is the one bound in gin (``make_strategy.kind =
  'mirrored'`` or ``'multi_worker'``), as for backbone pre-training; under
  multi-worker, only the chief writes into ``output_dir`` and evaluates. The run
  directory gets the current gin state as its saved config: the caller parsed the
  configuration ``configs`` came from.
  """
  source, model_config = configs.source, configs.model
  train_config, eval_config = configs.train, configs.eval
  start = time.time()
  run = RunDir(output_dir, "run_experiment.output_dir").prepare()  # before any work
  splits = source.load_all(("train", "val", eval_config.split))
  log(f"[data] {source.folder}/{source.crop}: " + ", ".join(
      f"{s} {d.embeddings.shape[0]} x {d.dim} ({d.num_classes} classes)"
      for s, d in splits.items()))
  train, val = splits["train"], splits["val"]
  train_splits = ("train", "val") if train_config.train_on_val else ("train",)
  if train_config.train_on_val:
    train = EmbeddingSet.concatenate([train, val])
    log(f"[data] meta-training on train + val classes ({train.num_classes})" + (
        "; validation still selects the best checkpoint, on classes it also trains on "
        "(the authors' protocol)" if train_config.select_on_val else
        " (no validation, the last step is tested)"))
  if not train_config.select_on_val:
    val = None
  # Before meta-training's first op (loading the files runs none). If the embeddings were
  # just built (pre-training), TF has started with its default pools: configure() logs it.
  threads.configure(configs.threads, log=log)
  strategy = configs.make_strategy()
  chief = strategy_lib.is_chief(strategy)  # the other workers write nothing here
  with lock.hold(output_dir, "leo-train", log) if chief else contextlib.nullcontext():
    end_to_end = (EndToEnd.create(configs.end_to_end, source, splits, train_splits, strategy,
                                  log) if configs.end_to_end.enabled else None)
    trainer = MetaTrainer(model_config, train_config, train, val, output_dir,
                          strategy=strategy, log=log, episodes=configs.episodes,
                          end_to_end=end_to_end)
    # The config is written only once the checkpoints are known to fit it: a rerun with
    # another model configuration fails and leaves the run directory as it was.
    step = trainer.restore()
    if chief:
      gin_config.save_config(run.config)
    trainer.train(step)
    if chief:
      gin_config.save_config(run.operative_config, operative=True)
  trainer.log(f"[train] done in {time.time() - start:.0f} s; checkpoints in {output_dir}")
  result = ExperimentResult(output_dir, None, trainer.best_validation())
  if not chief:
    log(f"{strategy_lib.worker_tag(strategy)}the chief evaluates the test split")
  elif evaluate_test:
    which = run.choose("best" if val is not None else "latest", fallback=True)
    model = weights.load_model(output_dir, model_config, train.dim, which)
    test = splits[eval_config.split]
    if end_to_end:  # the same as the backbone inside: BN on its statistics, no dropout
      test = end_to_end.finish(run, which, source, log).load(eval_config.split)
    result.test = test_result(model, test, model_config, eval_config, log, configs.episodes)
    log(f"[result] {which} checkpoint, {eval_config.split}: accuracy {result.test} "
        f"({time.time() - start:.0f} s since the start)")
    if after_test is not None:
      after_test(output_dir, log=log)
      log(f"[done] {time.time() - start:.0f} s since the start")
  return result
