"""The results of a search: one row per trial (trials.csv, trials.md) and the best
trial as a .gin file leo-train runs as is (best.gin, best_full.gin)."""

import os
from typing import Any, Dict, List

from leo_tf.runtime import files
from leo_tf.tuning.hypermodel import TrialSetup, read_record
from leo_tf.tuning.space import OBJECTIVE


def trial_rows(tuner, setup: TrialSetup) -> List[Dict[str, Any]]:
  """One row per trial: id, status, objective, steps, seconds and the tuned values."""
  rows = []
  for trial_id in sorted(tuner.oracle.trials):
    trial = tuner.oracle.trials[trial_id]
    hp = trial.hyperparameters.values
    record = read_record(tuner.get_trial_dir(trial_id))
    completed = trial.status == "COMPLETED" and trial.score is not None
    row = {"trial": trial_id, "status": trial.status,
           OBJECTIVE: float(trial.score) if completed else None,
           "steps": trial_epochs(hp, setup) * setup.tune.validate_every,
           "seconds": round(record["seconds"], 1) if "seconds" in record else None}
    if setup.tune.tuner == "hyperband":
      row["continues"] = hp.get("tuner/trial_id", "")
    row.update(setup.space.values(hp))
    rows.append(row)
  return rows


def _columns(setup: TrialSetup) -> List[str]:
  fixed = ["trial", "status", OBJECTIVE, "steps", "seconds"]
  if setup.tune.tuner == "hyperband":
    fixed.append("continues")
  return fixed + [p.binding for p in setup.space.params]


def markdown_table(rows: List[Dict[str, Any]], setup: TrialSetup) -> str:
  columns = _columns(setup)
  return "\n".join(files.markdown_table(
      columns, [[fmt(row.get(c)) for c in columns] for row in rows]))


def csv_table(rows: List[Dict[str, Any]], setup: TrialSetup) -> str:
  return files.csv_text(rows, _columns(setup), lineterminator="\n")


def best_gin_text(setup: TrialSetup, trial, out: str, full: bool) -> str:
  """A .gin file leo-train accepts as is: base files and bindings, budget, trial values."""
  hp = trial.hyperparameters.values
  values = setup.space.values(hp)
  run_dir = os.path.join(os.path.abspath(out), "best_full_run" if full else "best_run")
  lines = [f"# leo-tune: trial {trial.trial_id} of the search in {os.path.abspath(out)}, "
           f"{OBJECTIVE} {trial.score:.4f}.",
           "# leo-train --gin_file=<this file> " +
           ("meta-trains with these values for the base config's full budget."
            if full else "reproduces the trial (its budget included).")]
  if "tuner/trial_id" in hp and not full:
    lines.append(f"# (The search continued trial {hp['tuner/trial_id']}'s weights; "
                 "this file trains from scratch for the same total steps.)")
  lines += ["", "# The search's base config:"]
  lines += [f"include {f!r}" for f in setup.gin_files]
  if setup.bindings:
    lines += ["", "# The search's command-line bindings:"] + list(setup.bindings)
  if not full:
    lines += ["", "# The trial's budget:"]
    lines += setup.tune.budget_bindings(trial_epochs(hp, setup))
  lines += ["", "# The trial's values:"] + setup.space.bindings(values)
  lines += ["", f"run_experiment.output_dir = {run_dir!r}", ""]
  return "\n".join(lines)


def trial_epochs(hp: Dict[str, Any], setup: TrialSetup) -> int:
  return int(hp.get("tuner/epochs", setup.tune.max_epochs))


def fmt(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)
