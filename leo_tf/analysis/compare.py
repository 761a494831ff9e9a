"""LEO, its ablations and simple baselines side by side on identical test episodes.

Every method sees the same episodes: the sampler is stateless, so one seed gives one
stream of episodes whichever method consumes it. Per method we report accuracy
(mean +- 95% CI over episodes), the paired difference to LEO on the same episodes,
ECE and NLL of the query predictions, and draw a reliability diagram.

Where the ablation models come from (each must be a meta-trained leo-train output):
1. ``run_comparison(ablation_dirs={"maml": "runs/maml", ...})`` - existing runs;
2. otherwise, with ``CompareConfig.ablation_train_steps > 0``, each missing ablation is
   meta-trained from the base run's saved config with ``gin/ablations/<name>.gin``
   applied and ``TrainConfig.num_steps`` set to that budget, into
   ``<output_dir>/ablations/<name>``. A later comparison finds the checkpoint there and
   reuses it (an interrupted run resumes; delete the directory to retrain).
Ablations with neither are left out of the table, with a message saying so.
"""

import dataclasses
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

from leo_tf import gin_config
from leo_tf.analysis import baselines, calibration, ensemble
from leo_tf.analysis.progress import ProgressBar
from leo_tf.config_checks import ConfigError, check_types, require_at_least
from leo_tf.data.embeddings import EmbeddingSet
from leo_tf.data.episodes import EpisodeSampler, fold_seed
from leo_tf.data.source import EmbeddingSource
from leo_tf.leo import weights
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.evaluation import EvalConfig, EvalResult
from leo_tf.leo.model import episode_accuracy
from leo_tf.leo.run import Run, RunConfigs, open_run
from leo_tf.runtime import files

# {shots}: the base run's K (the paper's variant differs between 1- and 5-shot).
ABLATION_GIN = {
    "paper": "models/leo_paper_{shots}shot.gin",
    "deterministic": "ablations/deterministic.gin",
    "random_prior": "ablations/random_prior.gin",
    "maml": "ablations/maml.gin",
    "maml_original": "ablations/maml_original.gin",
}
LABELS = {
    "leo": "LEO",
    "paper": "LEO (the paper's variant)",
    "deterministic": "LEO (deterministic)",
    "random_prior": "LEO (random prior)",
    "maml": "MAML (same features)",
    "maml_original": "MAML (original form, same features)",
    "ncm": "Nearest class mean",
    "logreg": "Logistic regression",
}
BASELINES = ("ncm", "logreg")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What ``leo-eval --compare`` puts in the table.

  Attributes:
    ablations: ablation names (keys of ABLATION_GIN) to include; "paper" is the
      paper's variant (models/leo_paper_{1,5}shot.gin) meta-trained like the others.
    ablation_train_steps: meta-training budget for ablations without a given run
      directory; 0 leaves them out instead.
    ablation_bindings: extra gin bindings for those budgeted runs.
    ensemble_samples: latent samples of the ensemble row; None takes
      LEOConfig.ensemble_samples of the base run (1 = no ensemble row).
    ensemble_seed: seed of the latent samples.
    baselines: subset of ("ncm", "logreg").
    ncm_temperature: softmax temperature of the nearest-class-mean distances; None fits
      it (NLL on ``fit_episodes`` validation episodes, as for logreg_c).
    logreg_c: inverse L2 strength of the logistic regression (sklearn's C); None picks
      the value of ``logreg_c_grid`` with the lowest NLL on validation episodes.
    logreg_steps: accelerated gradient steps of its batched solver.
    num_bins: equal-width confidence bins of ECE and the reliability diagram.
  """
  ablations: Tuple[str, ...] = ("paper", "deterministic", "random_prior", "maml")
  ablation_train_steps: int = 0
  ablation_bindings: Tuple[str, ...] = ()
  ensemble_samples: Optional[int] = None
  ensemble_seed: int = 7
  baselines: Tuple[str, ...] = BASELINES
  ncm_temperature: Optional[float] = None
  fit_episodes: int = 200
  logreg_c: Optional[float] = None
  logreg_c_grid: Tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
  logreg_steps: int = 300
  num_bins: int = calibration.DEFAULT_NUM_BINS

  def __post_init__(self):
    check_types(self)
    for name in ("ablations", "ablation_bindings", "baselines", "logreg_c_grid"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    unknown = [a for a in self.ablations if a not in ABLATION_GIN]
    unknown += [b for b in self.baselines if b not in BASELINES]
    if unknown:
      raise ConfigError(f"CompareConfig: unknown methods {unknown}; ablations are "
                        f"{sorted(ABLATION_GIN)}, baselines {list(BASELINES)}")
    require_at_least(self, 1, "num_bins")
    require_at_least(self, 0, "ablation_train_steps")


@dataclasses.dataclass
class MethodResult:
  name: str
  accuracy: EvalResult
  calibration: calibration.CalibrationStats


# A method maps (episode batch, batch index) to query logits [B, N, Q, N].
Predict = Callable[[Dict[str, tf.Tensor], tf.Tensor], tf.Tensor]


# ------------------------------------------------------------------ evaluation


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def evaluate_method(name: str, predict: Predict, sampler: EpisodeSampler,
                    num_episodes: int, batch_size: int, seed: int,
                    num_bins: int = calibration.DEFAULT_NUM_BINS,
                    progress: bool = True) -> MethodResult:
  """Accuracy per episode and pooled calibration of one method on the seeded stream."""
  stats = calibration.CalibrationStats(num_bins)
  accuracies = []
  bar = ProgressBar(num_episodes, name, "episodes") if progress else None
  for i, batch, count in sampler.batches(num_episodes, batch_size, seed):
    logits = predict(batch, tf.constant(i, tf.int64))[:count]
    mask = batch["query_mask"][:count]
    accuracies.append(episode_accuracy(logits, mask).numpy())
    logits, mask = logits.numpy(), mask.numpy()
    stats.update(softmax(logits), calibration.episode_labels(logits.shape), mask)
    if bar:
      bar.update(count)
  return MethodResult(name, EvalResult(np.concatenate(accuracies)), stats)


def paired_difference(a: EvalResult, b: EvalResult) -> Tuple[float, float]:
  """Mean and 95% CI half-width of per-episode accuracy a - b (same episodes)."""
  diff = EvalResult(a.accuracies - b.accuracies)
  return diff.mean, diff.ci95


# ------------------------------------------------------------------ the methods


def leo_predict(model) -> Predict:
  @tf.function
  def predict(batch, index):
    del index
    return model(batch, training=False)["logits"]
  return predict


def ensemble_predict(model, num_samples: int, seed: int) -> Predict:
  @tf.function
  def predict(batch, index):
    return ensemble.ensemble_logits(model, batch["support"], batch["query"], num_samples,
                                    fold_seed(seed, index))
  return predict


def ncm_predict(temperature: float) -> Predict:
  @tf.function
  def predict(batch, index):
    del index
    return baselines.ncm_logits(batch["support"], batch["query"], temperature)
  return predict


def logreg_predict(c: float, steps: int) -> Predict:
  def predict(batch, index):
    del index
    return baselines.logistic_regression_logits(batch["support"], batch["query"],
                                                tf.constant(c, tf.float32), steps)
  return predict


def fit_ncm_temperature(val_sampler: EpisodeSampler, num_episodes: int, batch_size: int,
                        seed: int) -> float:
  """NLL-optimal temperature of the NCM distances on validation episodes."""
  raw = ncm_predict(1.0)
  logits, masks = [], []
  for i, batch, count in val_sampler.batches(num_episodes, batch_size, seed):
    logits.append(raw(batch, tf.constant(i, tf.int64)).numpy()[:count])
    masks.append(batch["query_mask"].numpy()[:count])
  return baselines.fit_temperature(logits, masks)


def fit_logreg_c(val_sampler: EpisodeSampler, grid: Sequence[float], steps: int,
                 num_episodes: int, batch_size: int, seed: int) -> float:
  """The C on ``grid`` whose logistic regression has the lowest validation NLL."""
  nll = {c: evaluate_method(f"C={c}", logreg_predict(c, steps), val_sampler, num_episodes,
                            batch_size, seed, progress=False).calibration.nll
         for c in grid}
  return min(nll, key=nll.get)


# ------------------------------------------------------------------ obtaining the models


def train_ablation(base_dir: str, name: str, output_dir: str, steps: int,
                   bindings: Sequence[str], extra_files: Sequence[str],
                   log: Callable[[str], None], shots: int = 1) -> str:
  """Meta-trains (or resumes, or reuses) ablation ``name`` from the base run's config."""
  from leo_tf.leo.experiment import run_experiment  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(output_dir, "ablations", name)
  overrides = list(bindings) + [f"TrainConfig.num_steps = {int(steps)}",
                                f"run_experiment.output_dir = {run_dir!r}"]
  log(f"[compare] {LABELS[name]}: meta-training {steps} steps in {run_dir} "
      "(reused if already there)")
  # The ablation's own gin state while it trains: its config.gin records it.
  with gin_config.scoped(gin_config.saved_files(
      base_dir, [ABLATION_GIN[name].format(shots=shots)] + list(extra_files)), overrides,
                         saved=[gin_config.saved_config(base_dir)]):
    run_experiment(RunConfigs.from_gin(), output_dir=run_dir, evaluate_test=False, log=log)
  return run_dir


def read_compare_config(run_dir: str, bindings: Sequence[str] = (),
                        extra_files: Sequence[str] = ()) -> CompareConfig:
  return gin_config.read_saved(run_dir, CompareConfig, bindings, extra_files)


def resolve_ablation_dirs(base_dir: str, cfg: CompareConfig, given: Mapping[str, str],
                          output_dir: str, bindings: Sequence[str],
                          extra_files: Sequence[str],
                          log: Callable[[str], None], shots: int = 1) -> Dict[str, str]:
  unknown = sorted(set(given) - set(ABLATION_GIN))
  if unknown:
    raise ConfigError(f"--compare_dirs: unknown ablation names {unknown}; "
                      f"use {sorted(ABLATION_GIN)}")
  dirs = {}
  for name in cfg.ablations:
    if name in given:
      dirs[name] = given[name]
    elif cfg.ablation_train_steps > 0:
      dirs[name] = train_ablation(base_dir, name, output_dir, cfg.ablation_train_steps,
                                  list(bindings) + list(cfg.ablation_bindings),
                                  extra_files, log, shots)
    else:
      log(f"[compare] {LABELS[name]} left out: give its run directory "
          f"(--compare_dirs={name}=DIR) or a budget "
          "(--compare_train_steps=N) to meta-train it")
  return dirs


# ------------------------------------------------------------------ the table


def table_rows(results: Sequence[MethodResult]) -> List[Dict[str, float]]:
  ref = next((r for r in results if r.name == LABELS["leo"]), None)
  rows = []
  for r in results:
    delta, delta_ci = (paired_difference(r.accuracy, ref.accuracy)
                       if ref is not None and r is not ref else (float("nan"),) * 2)
    rows.append(dict(method=r.name, accuracy=r.accuracy.mean, ci95=r.accuracy.ci95,
                     delta_vs_leo=delta, delta_ci95=delta_ci, ece=r.calibration.ece,
                     nll=r.calibration.nll, episodes=int(r.accuracy.accuracies.size)))
  return rows


def _pct(value: float, digits: int = 2) -> str:
  return "-" if math.isnan(value) else f"{100 * value:.{digits}f}"


def markdown_table(rows: Sequence[Dict[str, float]], title: str, num_bins: int) -> str:
  cells = [[r["method"], f"{_pct(r['accuracy'])} +- {_pct(r['ci95'])}",
            "-" if math.isnan(r["delta_vs_leo"]) else
            f"{100 * r['delta_vs_leo']:+.2f} +- {_pct(r['delta_ci95'])}",
            _pct(r["ece"]), f"{r['nll']:.3f}"] for r in rows]
  lines = [f"### {title}", ""] + files.markdown_table(
      ["Method", "Accuracy (%)", "vs LEO, paired (pp)", "ECE (%)", "NLL"], cells)
  lines += ["", f"Mean +- 95% CI over {rows[0]['episodes']} episodes (identical for every "
            f"method). ECE: {num_bins} equal-width confidence bins, all queries pooled. "
            "NLL: mean over queries, nats."]
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the whole comparison


@dataclasses.dataclass
class Comparison:
  results: List[MethodResult]
  rows: List[Dict[str, float]]
  markdown: str
  paths: Dict[str, str]


def run_comparison(base: Run, cfg: CompareConfig, output_dir: Optional[str] = None,
                   ablation_dirs: Mapping[str, str] = (), bindings: Sequence[str] = (),
                   extra_files: Sequence[str] = (), log: Callable[[str], None] = print,
                   progress: bool = True) -> Comparison:
  """Evaluates every method on the base run's test protocol; writes CSV, MD and PNG.

  Ablation runs are opened (or meta-trained) from their own saved configs with
  ``extra_files`` and ``bindings`` on top, as the base run was.
  """
  output_dir = output_dir or os.path.join(base.directory, "compare")
  os.makedirs(output_dir, exist_ok=True)
  eval_cfg, base_config, source = base.configs.eval, base.configs.model, base.source
  test = base.load(eval_cfg.split)
  dirs = resolve_ablation_dirs(base.directory, cfg, dict(ablation_dirs or {}), output_dir,
                               bindings, extra_files, log, base_config.num_shots)
  methods: List[Tuple[str, Predict]] = [(LABELS["leo"], leo_predict(base.model))]
  samples = cfg.ensemble_samples or base_config.ensemble_samples
  if samples > 1 and ensemble.can_ensemble(base.model):
    methods.append((f"LEO, ensemble of {samples}",
                    ensemble_predict(base.model, samples, cfg.ensemble_seed)))
  elif samples > 1:
    log("[compare] no ensemble row: the base model has no latent distribution to sample")
  for name, run_dir in dirs.items():
    run = open_run(run_dir, "best", bindings, extra_files, fallback=True)
    if run.dim != test.dim:
      weights.check_fits(run.checkpoint, run.configs.model, test.dim)
    _check_compatible(name, run.configs.model, run.source, base_config, source, log)
    methods.append((LABELS[name], leo_predict(run.model)))

  methods += baseline_methods(cfg, source, base_config, eval_cfg, log)
  sampler = episode_sampler(test, base_config, eval_cfg.num_queries)
  title = (f"{base_config.num_classes}-way {base_config.num_shots}-shot, "
           f"{eval_cfg.split} split of {source.dataset}/{source.crop}, seed {eval_cfg.seed}")
  log(f"[compare] {title}: {len(methods)} methods x {eval_cfg.num_episodes} episodes")
  results = [evaluate_method(name, predict, sampler, eval_cfg.num_episodes,
                             eval_cfg.batch_size, eval_cfg.seed, cfg.num_bins, progress)
             for name, predict in methods]
  return _write(results, title, cfg.num_bins, output_dir, log)


def baseline_methods(cfg: CompareConfig, source: EmbeddingSource, config: LEOConfig,
                     eval_cfg: EvalConfig, log: Callable[[str], None]
                     ) -> List[Tuple[str, Predict]]:
  """NCM and logistic regression; unset hyperparameters are fitted on validation episodes."""
  needs_val = (("ncm" in cfg.baselines and cfg.ncm_temperature is None) or
               ("logreg" in cfg.baselines and cfg.logreg_c is None))
  val = episode_sampler(source.load("val"), config, None) if needs_val else None
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


def episode_sampler(data: EmbeddingSet, config: LEOConfig, num_queries) -> EpisodeSampler:
  return EpisodeSampler(data, config.num_classes, config.num_shots, num_queries)


def _check_compatible(name, config, run_source, base_config, base_source, log):
  shape = (config.num_classes, config.num_shots)
  if shape != (base_config.num_classes, base_config.num_shots):
    raise ConfigError(f"{LABELS[name]} was trained {shape[0]}-way {shape[1]}-shot but the "
                      f"base run is {base_config.num_classes}-way "
                      f"{base_config.num_shots}-shot")
  if (run_source.dataset, run_source.crop) != (base_source.dataset, base_source.crop):
    log(f"[compare] warning: {LABELS[name]} was trained on {run_source.dataset}/"
        f"{run_source.crop}; it is evaluated on the base run's {base_source.dataset}/"
        f"{base_source.crop} test episodes")


def _write(results, title, num_bins, output_dir, log) -> Comparison:
  rows = table_rows(results)
  markdown = markdown_table(rows, title, num_bins)
  paths = dict(csv=files.atomic_write(os.path.join(output_dir, "compare.csv"),
                                      files.csv_text(rows)),
               markdown=files.atomic_write(os.path.join(output_dir, "compare.md"), markdown),
               reliability=calibration.reliability_diagram(
                   {r.name: r.calibration for r in results},
                   os.path.join(output_dir, "reliability.png"), title))
  log("\n" + markdown)
  log("[compare] wrote " + ", ".join(paths.values()))
  return Comparison(results, rows, markdown, paths)
