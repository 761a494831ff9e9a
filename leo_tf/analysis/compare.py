"""LEO, its ablations and simple baselines side by side on identical test episodes (the
sampler is stateless: one seed, one stream of episodes whichever method consumes it). Per
method: accuracy (mean +- 95% CI over episodes), the paired difference to LEO, ECE and NLL,
as CSV, Markdown and a reliability diagram. The configuration is in compare_config, the
methods in methods, the ablation runs in ablations."""

import dataclasses
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import gin

from leo_tf import saved_config
from leo_tf.analysis import ablations, calibration, methods
from leo_tf.analysis.compare_config import LABELS, CompareConfig
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.run import Run, open_run
from leo_tf.runtime import files


@dataclasses.dataclass
class Comparison:
  results: List[methods.MethodResult]
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
  output_dir = output_dir or base.directory.compare
  os.makedirs(output_dir, exist_ok=True)
  eval_cfg, base_config, source = base.configs.eval, base.configs.model, base.source
  test = base.load(eval_cfg.split)
  dirs = ablations.resolve_ablation_dirs(base.directory, cfg, dict(ablation_dirs or {}),
                                         output_dir,
                                         list(bindings) + ablations.on_base_features(base),
                                         extra_files, log, base_config.num_shots)
  predictors = [(LABELS["leo"], methods.leo_predict(base.model))]
  samples = cfg.ensemble_samples or base_config.ensemble_samples
  ensemble = methods.ensemble_method(base.model, samples, cfg.ensemble_seed)
  if ensemble:
    predictors.append(ensemble)
  elif samples > 1:
    log("[compare] no ensemble row: the base model has no latent distribution to sample")
  predictors += ablations.ablation_methods(base, dirs, test.dim, bindings, extra_files, log)
  predictors += methods.baseline_methods(cfg, source, base_config, eval_cfg, log,
                                         base.configs.episodes)
  sampler = EpisodeSampler.for_model(test, base_config, eval_cfg.num_queries,
                                     base.configs.episodes)
  title = (f"{sampler.shape}, {eval_cfg.split} split of {source.folder}/{source.crop}, "
           f"seed {eval_cfg.seed}")
  log(f"[compare] {title}: {len(predictors)} methods x {eval_cfg.num_episodes} episodes")
  results = [methods.evaluate_method(name, predict, sampler, eval_cfg.num_episodes,
                                     eval_cfg.batch_size, eval_cfg.seed, cfg.num_bins, progress)
             for name, predict in predictors]
  return _write(results, title, cfg.num_bins, output_dir, log)


@gin.configurable(denylist=["run_dir", "log"])
def compare_to_baselines(run_dir: str, log: Callable[[str], None] = print) -> Comparison:
  """The table of ``leo-eval --compare`` without ablations: LEO beside nearest class mean
  and logistic regression (CompareConfig) on the run's test episodes, into
  ``<run_dir>/compare``. ``run_experiment.after_test = @compare_to_baselines`` makes one
  leo-train command end with it."""
  cfg = dataclasses.replace(saved_config.read_saved(run_dir, CompareConfig), ablations=())
  return run_comparison(open_run(run_dir, fallback=True, log=log), cfg, log=log,
                        progress=False)


def table_rows(results: Sequence[methods.MethodResult]) -> List[Dict[str, float]]:
  ref = next((r for r in results if r.name == LABELS["leo"]), None)
  rows = []
  for r in results:
    delta, delta_ci = (methods.paired_difference(r.accuracy, ref.accuracy)
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
