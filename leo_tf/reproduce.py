"""Reproducing the paper's table: the authors' four final-code experiments (miniImageNet /
tieredImageNet x 1 / 5-shot) on a user's embeddings, over seeds, beside the numbers of the
authors' code and of the paper. What ``leo-reproduce`` runs.

Every (experiment, seed) is a leo-train run in ``<output_dir>/<experiment>_<protocol>/
seed_<s>/``: an interrupted run resumes from its latest checkpoint, and a finished one
(its ``result.json`` records what was asked) is not run again. The table is rewritten
after every run, so a partial reproduction leaves a partial table.
"""

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from leo_tf import gin_config
from leo_tf.leo.config import ConfigError
from leo_tf.leo.evaluation import EvalResult
from leo_tf.runtime import files
from leo_tf.runtime.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class Reference:
  """An experiment and the test accuracies (%) reported for it, 5-way."""
  dataset: str
  shots: int
  authors_code: float       # what the authors' released final code reached
  authors_code_ci95: float
  paper: float              # the published paper (final version)
  paper_ci95: float


EXPERIMENTS = {
    "mini_1shot": Reference("miniImageNet", 1, 61.89, 0.16, 61.76, 0.08),
    "mini_5shot": Reference("miniImageNet", 5, 77.65, 0.09, 77.59, 0.12),
    "tiered_1shot": Reference("tieredImageNet", 1, 66.25, 0.14, 66.33, 0.05),
    "tiered_5shot": Reference("tieredImageNet", 5, 81.77, 0.09, 81.44, 0.09),
}
# "trainval": as the authors produced their numbers (meta-training on train + val classes,
# validation still selecting on val); "train": validation classes held out.
PROTOCOLS = {
    "trainval": "meta-trained on train + val, best checkpoint on val (the authors' protocol)",
    "train": "meta-trained on train, best checkpoint on val",
}
# Rows of the released embeddings per split (tieredImageNet's are not documented here).
RELEASED_ROWS = {"miniImageNet": dict(train=38400, val=9600, test=12000)}
# What the table reads from a result; a CI may be null, and old results have no wall time.
NUMBERS, MAYBE_NUMBERS = ("seed", "steps", "accuracy", "episodes"), ("ci95", "seconds")
TABLE_JSON, TABLE_MARKDOWN = "table.json", "table.md"


class ReproduceError(ConfigError):
  """An experiment name, seed or protocol that leo-reproduce cannot run."""


def experiment_file(name: str, protocol: str) -> str:
  """The shipped gin file of ``name`` ("mini_1shot") under ``protocol``."""
  dataset, shots = name.split("_")
  return f"experiments/{dataset}_final_{shots}" + (
      "_trainval.gin" if protocol == "trainval" else ".gin")


def check_request(experiments: Sequence[str], seeds: Sequence[int], protocol: str,
                  steps: Optional[int]) -> None:
  unknown = [e for e in experiments if e not in EXPERIMENTS]
  if unknown or not experiments:
    raise ReproduceError(f"unknown experiment(s) {unknown}: choose from "
                         f"{', '.join(EXPERIMENTS)}")
  if protocol not in PROTOCOLS:
    raise ReproduceError(f"protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
  if len(set(experiments)) != len(experiments):
    raise ReproduceError(f"experiments {list(experiments)}: give each experiment once")
  if not seeds or len(set(seeds)) != len(seeds):
    raise ReproduceError(f"seeds {list(seeds)}: give one or more distinct seeds")
  if steps is not None and steps < 1:
    raise ReproduceError(f"--steps must be >= 1, got {steps}")


@dataclasses.dataclass(frozen=True)
class Run:
  """One (experiment, seed) and everything that configures it."""
  experiment: str
  seed: int
  gin_files: List[str]
  bindings: List[str]
  output_dir: str

  def configs(self):
    """The run's RunConfigs, read in a gin scope (the caller's gin state is untouched)."""
    from leo_tf.leo.run import RunConfigs
    with gin_config.scoped(self.gin_files, self.bindings):
      return RunConfigs.from_gin()

  def request(self) -> dict:
    return dict(gin_files=self.gin_files, bindings=self.bindings)

  def finished(self) -> Optional[dict]:
    """The recorded result if this exact run finished before."""
    path = RunDir(self.output_dir).result
    if not os.path.exists(path):
      return None
    try:
      with open(path) as f:
        record = json.load(f)
    except ValueError as e:  # not JSON, or not UTF-8
      raise _damaged(path, f"{type(e).__name__}: {e}") from None
    if not (isinstance(record, dict) and "request" in record and
            all(isinstance(record.get(k), (int, float)) for k in NUMBERS) and
            all(isinstance(record.get(k), (int, float, type(None))) for k in MAYBE_NUMBERS)):
      raise _damaged(path, f"not a result with the numbers {', '.join(NUMBERS)}")
    return record if record["request"] == self.request() else None


def _damaged(path: str, problem: str) -> ReproduceError:
  return ReproduceError(f"{path} is damaged ({problem}); delete it and run again: the run "
                        "resumes from its checkpoints and is only tested again")


def plan(root: str, output_dir: str, experiments: Sequence[str], seeds: Sequence[int],
         protocol: str, steps: Optional[int], gin_files: Sequence[str] = (),
         bindings: Sequence[str] = (), log: Callable[[str], None] = print) -> List[Run]:
  """The runs, experiment-major; fails before any training when a split file is missing,
  and warns when the embeddings cannot be the released ones."""
  check_request(experiments, seeds, protocol, steps)
  runs, checked = [], []
  for name in experiments:
    for seed in seeds:
      runs.append(Run(
          name, seed, [experiment_file(name, protocol)] + list(gin_files),
          [f"EmbeddingSource.root = {root!r}", f"TrainConfig.seed = {seed}"] +
          ([f"TrainConfig.num_steps = {steps}"] if steps else []) + list(bindings),
          os.path.join(output_dir, f"{name}_{protocol}", f"seed_{seed}")))
    source = runs[-1].configs().source
    missing = source.missing_splits(("train", "val", "test"))
    if missing:
      raise FileNotFoundError(
          f"{name}: no {', '.join(missing)} embeddings under "
          f"{os.path.join(source.root, source.dataset, source.crop)} (expected "
          f"<split>_embeddings.pkl or .npz); choose the experiments you have with "
          f"--experiments")
    if source not in checked:
      checked.append(source)
      _check_released(source, log)
  return runs


def _check_released(source, log: Callable[[str], None]) -> None:
  released = RELEASED_ROWS.get(source.dataset)
  if released is None:
    return
  found = {s: source.load(s).embeddings.shape[0] for s in released}
  if found != released:
    log(f"[reproduce] warning: {source.dataset}/{source.crop} has "
        f"{' / '.join(map(str, found.values()))} train / val / test embeddings, the released "
        f"ones {' / '.join(map(str, released.values()))}: these are not the released "
        "embeddings, so the reference columns do not compare")


def run_one(run: Run, log: Callable[[str], None] = print) -> dict:
  """Meta-trains and tests one run (resuming it), or returns its recorded result."""
  record = run.finished()
  if record is not None:
    log(f"[reproduce] {run.experiment} seed {run.seed}: finished before, {_result(record)} "
        f"({run.output_dir})")
    return record
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  log(f"[reproduce] {run.experiment} seed {run.seed}: {' '.join(run.gin_files)} -> "
      f"{run.output_dir}")
  start = time.time()
  # The run's own gin state while it trains: run_experiment saves it as config.gin.
  with gin_config.scoped(run.gin_files, run.bindings):
    configs = RunConfigs.from_gin()
    result = run_experiment(configs, output_dir=run.output_dir, log=log)
  record = dict(request=run.request(), experiment=run.experiment, seed=run.seed,
                steps=configs.train.num_steps, accuracy=result.test.mean, ci95=result.test.ci95,
                episodes=int(result.test.accuracies.size),
                best_validation=result.best_validation, run_dir=run.output_dir,
                seconds=round(time.time() - start, 1))
  files.atomic_write(RunDir(run.output_dir).result, _json(record))
  log(f"[reproduce] {run.experiment} seed {run.seed}: {_result(record)}")
  return record


def _result(record: dict) -> str:
  """``61.23 ± 0.15 % in 812 s``: a run's test accuracy and its wall time (results written
  before wall times were recorded have none)."""
  return (_pm(100 * record["accuracy"], _percent(record.get("ci95"))) + " %" +
          ("" if record.get("seconds") is None else f" in {record['seconds']:.0f} s"))


def _percent(fraction: Optional[float]) -> Optional[float]:
  return None if fraction is None else 100 * fraction


def _json(data) -> str:
  """Strict JSON: an undefined CI (one seed, one episode) is null, not NaN."""
  return json.dumps(json.loads(json.dumps(data), parse_constant=lambda _: None), indent=1,
                    allow_nan=False)


def table(records: Sequence[dict], experiments: Sequence[str], seeds: Sequence[int],
          protocol: str) -> dict:
  """The reproduction table as data (accuracies in %)."""
  rows = []
  for name in experiments:
    ref = EXPERIMENTS[name]
    done = {r["seed"]: r for r in records if r["experiment"] == name}
    per_seed = {str(s): (dict(accuracy=100 * done[s]["accuracy"],
                              ci95=_percent(done[s].get("ci95")),
                              episodes=done[s]["episodes"], steps=done[s]["steps"],
                              run_dir=done[s]["run_dir"], seconds=done[s].get("seconds"))
                         if s in done else None)
                for s in seeds}
    finished = [v["accuracy"] for v in per_seed.values() if v is not None]
    # Over seeds: the mean and the 95% CI of the seed means (NaN for one seed).
    over = EvalResult(np.asarray(finished, np.float64)) if finished else None
    mean, ci = (over.mean, over.ci95) if over else (None, None)
    rows.append(dict(experiment=name, dataset=ref.dataset, ways=5, shots=ref.shots,
                     seeds=per_seed, mean=mean, ci95_over_seeds=ci,
                     authors_code=ref.authors_code,
                     authors_code_ci95=ref.authors_code_ci95, paper=ref.paper,
                     paper_ci95=ref.paper_ci95))
  return dict(protocol=protocol, protocol_description=PROTOCOLS[protocol],
              seeds=list(seeds), rows=rows)


def _pm(value: Optional[float], ci: Optional[float]) -> str:
  if value is None:
    return "-"
  return f"{value:.2f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.2f}")


def _markdown_row(row: dict) -> List[str]:
  steps = sorted({v["steps"] for v in row["seeds"].values() if v})
  return ([f"{row['dataset']} {row['shots']}-shot", ", ".join(map(str, steps)) or "-"] +
          [_pm(v["accuracy"], v["ci95"]) if v else "-" for v in row["seeds"].values()] +
          [_pm(row["mean"], row["ci95_over_seeds"]),
           _pm(row["authors_code"], row["authors_code_ci95"]),
           _pm(row["paper"], row["paper_ci95"])])


def markdown(data: dict) -> str:
  """The table as Markdown: per seed mean ± 95% CI over test episodes, then over seeds."""
  seeds = data["seeds"]
  steps = sorted({v["steps"] for row in data["rows"] for v in row["seeds"].values() if v})
  head = (["experiment", "steps"] + [f"seed {s}" for s in seeds] +
          ["ours, over seeds", "authors' code", "paper"])
  lines = [f"5-way test accuracy (%), {data['protocol_description']}; per seed: mean ± 95% "
           "CI over test episodes; over seeds: mean ± 95% CI of the seed means.", ""]
  lines += files.markdown_table(head, [_markdown_row(row) for row in data["rows"]])
  if steps and steps != [100000]:
    lines += ["", f"Meta-trained for {', '.join(map(str, steps))} steps (the authors: "
              "100000): not comparable with the reference columns."]
  return "\n".join(lines) + "\n"


def write_table(data: dict, output_dir: str) -> Dict[str, str]:
  paths = dict(json=os.path.join(output_dir, TABLE_JSON),
               markdown=os.path.join(output_dir, TABLE_MARKDOWN))
  files.atomic_write(paths["json"], _json(data))
  files.atomic_write(paths["markdown"], markdown(data))
  return paths


def reproduce(root: str, output_dir: str, experiments: Sequence[str] = tuple(EXPERIMENTS),
              seeds: Sequence[int] = (0,), protocol: str = "trainval",
              steps: Optional[int] = None, gin_files: Sequence[str] = (),
              bindings: Sequence[str] = (), log: Callable[[str], None] = print) -> dict:
  """Runs (or resumes) every experiment x seed and returns the table; the table files
  in ``output_dir`` are rewritten after each run."""
  records = []
  for run in plan(root, output_dir, experiments, seeds, protocol, steps, gin_files, bindings,
                  log):
    records.append(run_one(run, log))
    write_table(table(records, experiments, seeds, protocol), output_dir)
  return table(records, experiments, seeds, protocol)
