"""The methods a comparison evaluates and how one is scored (accuracy per episode, pooled
calibration); the baselines' unset hyperparameters are fitted here on validation episodes.
A predictor maps (episode batch, batch index) to query logits [B, N, Q, N]; the index seeds
its draws (the ensemble's), so its numbers do not depend on what ran before it."""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from leo_tf.analysis import baselines, calibration, ensemble
from leo_tf.analysis.compare_config import LABELS, CompareConfig
from leo_tf.analysis.progress import ProgressBar
from leo_tf.data.episodes import EpisodeSampler, VariableEpisodes, fold_seed
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.evaluation import EvalConfig, EvalResult, run_episodes
from leo_tf.leo.experiment import test_result
from leo_tf.leo.model import episode_accuracy
from leo_tf.leo.run import Run

Predict = Callable[[Dict[str, tf.Tensor], tf.Tensor], tf.Tensor]


@dataclasses.dataclass
class MethodResult:
  name: str
  accuracy: EvalResult
  calibration: calibration.CalibrationStats


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _scored(predict: Predict) -> Callable:
  """A run_episodes step: a predictor's logits, query mask and per-episode accuracy."""
  def step(batch, index):
    logits, mask = predict(batch, index), batch["query_mask"]
    return dict(accuracy=episode_accuracy(logits, mask), logits=logits, mask=mask)
  return step


def evaluate_method(name: str, predict: Predict, sampler: EpisodeSampler,
                    num_episodes: int, batch_size: int, seed: int,
                    num_bins: int = calibration.DEFAULT_NUM_BINS,
                    progress: bool = True) -> MethodResult:
  """Accuracy per episode and pooled calibration of one method on the seeded stream."""
  stats = calibration.CalibrationStats(num_bins)
  bar = ProgressBar(num_episodes, name, "episodes") if progress else None

  def each(out, count):
    logits = out["logits"]
    stats.update(softmax(logits), calibration.episode_labels(logits.shape), out["mask"])
    if bar:
      bar(out, count)
  accuracies = run_episodes(_scored(predict), sampler, num_episodes, batch_size, seed,
                            keep=("accuracy",), each=each)["accuracy"]
  return MethodResult(name, EvalResult(accuracies), stats)


def paired_difference(a: EvalResult, b: EvalResult) -> Tuple[float, float]:
  """Mean and 95% CI half-width of per-episode accuracy a - b (same episodes)."""
  diff = EvalResult(a.accuracies - b.accuracies)
  return diff.mean, diff.ci95


# Predictors traced by tf.function name their index argument: TF warns that "_" is not a
# valid node name.
def leo_predict(model) -> Predict:
  return tf.function(lambda batch, index: model(batch, training=False)["logits"])


def ensemble_method(model, num_samples: int, seed: int) -> Optional[Tuple[str, Predict]]:
  """The test-time ensemble of ``num_samples`` latent samples, labelled; None when there
  is no ensemble (one sample, or a model without a latent distribution to sample)."""
  if num_samples <= 1 or not ensemble.can_ensemble(model):
    return None

  @tf.function
  def predict(batch, index):
    return ensemble.ensemble_logits(model, batch["support"], batch["query"], num_samples,
                                    fold_seed(seed, index), batch.get("support_mask"))
  return f"LEO, ensemble of {num_samples}", predict


def ncm_predict(temperature: float) -> Predict:
  return tf.function(lambda batch, index: baselines.ncm_logits(
      batch["support"], batch["query"], temperature, batch.get("support_mask")))


def logreg_predict(c: float, steps: int) -> Predict:
  return lambda batch, _: baselines.logistic_regression_logits(
      batch["support"], batch["query"], tf.constant(c, tf.float32), steps,
      batch.get("support_mask"))


def fit_ncm_temperature(val_sampler: EpisodeSampler, num_episodes: int, batch_size: int,
                        seed: int) -> float:
  """NLL-optimal temperature of the NCM distances on validation episodes."""
  out = run_episodes(_scored(ncm_predict(1.0)), val_sampler, num_episodes, batch_size, seed,
                     keep=("logits", "mask"))
  return baselines.fit_temperature(out["logits"], out["mask"])


def fit_logreg_c(val_sampler: EpisodeSampler, grid: Sequence[float], steps: int,
                 num_episodes: int, batch_size: int, seed: int) -> float:
  """The C on ``grid`` whose logistic regression has the lowest validation NLL."""
  nll = {c: evaluate_method(f"C={c}", logreg_predict(c, steps), val_sampler, num_episodes,
                            batch_size, seed, progress=False).calibration.nll
         for c in grid}
  return min(nll, key=nll.get)


def baseline_methods(cfg: CompareConfig, source: EmbeddingSource, config: LEOConfig,
                     eval_cfg: EvalConfig, log: Callable[[str], None],
                     episodes: Optional[VariableEpisodes] = None
                     ) -> List[Tuple[str, Predict]]:
  """NCM and logistic regression; unset hyperparameters are fitted on validation episodes
  of the test's shape (``episodes``: variable ones when they are the test's)."""
  needs_val = (("ncm" in cfg.baselines and cfg.ncm_temperature is None) or
               ("logreg" in cfg.baselines and cfg.logreg_c is None))
  val = (EpisodeSampler.for_model(source.load("val"), config, None, episodes)
         if needs_val else None)
  fit_args = (cfg.fit_episodes, eval_cfg.batch_size, eval_cfg.seed + 1)
  methods = []
  if "ncm" in cfg.baselines:
    temperature = cfg.ncm_temperature
    if temperature is None:
      temperature = fit_ncm_temperature(val, *fit_args)
      log(f"[compare] nearest class mean: temperature {temperature:.4g} "
          f"(NLL-optimal on {cfg.fit_episodes} validation episodes)")
    methods.append((LABELS["ncm"], ncm_predict(temperature)))
  if "logreg" in cfg.baselines:
    c = cfg.logreg_c
    if c is None:
      c = fit_logreg_c(val, cfg.logreg_c_grid, cfg.logreg_steps, *fit_args)
      log(f"[compare] logistic regression: C = {c:g} (NLL-optimal of "
          f"{list(cfg.logreg_c_grid)} on {cfg.fit_episodes} validation episodes)")
    methods.append((LABELS["logreg"], logreg_predict(c, cfg.logreg_steps)))
  return methods


def evaluate_run(run: Run, ensemble_seed: int, log: Callable[[str], None] = print
                 ) -> EvalResult:
  """A run's accuracy on its test protocol, as leo-eval reports it: the test-time ensemble
  of its LEOConfig.ensemble_samples when the model can sample (ECE and NLL logged too),
  otherwise the plain evaluation."""
  config, eval_cfg = run.configs.model, run.configs.eval
  data = run.load(eval_cfg.split)
  method = ensemble_method(run.model, config.ensemble_samples, ensemble_seed)
  if method is None:
    return test_result(run.model, data, config, eval_cfg, log, run.configs.episodes)
  out = evaluate_method(*method, EpisodeSampler.for_model(data, config, eval_cfg.num_queries,
                                                          run.configs.episodes),
                        eval_cfg.num_episodes, eval_cfg.batch_size, eval_cfg.seed)
  log(f"[result] {out.name}: ECE {100 * out.calibration.ece:.2f}% "
      f"NLL {out.calibration.nll:.3f}")
  return out.accuracy
