"""A leo-tune search: tuner set-up, resumption, and its outputs (written by tuning/trials.py).

Layout of ``TuneConfig.output_dir``:
  search.json          what the search was started with (a resume must match it)
  trials/              keras-tuner's project: oracle state, one trial_<id>/ per trial
                       (train.log, leo/ checkpoints and TensorBoard logs, leo_trial.json)
  trials.csv, trials.md  the table of trials
  best.gin             reproduces the best trial: `leo-train --gin_file=best.gin`
  best_full.gin        the best trial's values with the base config's own budget

Distributed search: tuning/oracle.py.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import keras_tuner as kt
from keras_tuner.src import config as kt_config

from leo_tf import gin_config
from leo_tf.runtime import files, threads
from leo_tf.runtime.rundir import RunDir
from leo_tf.tuning import trials
from leo_tf.tuning.hypermodel import LEOHyperModel, TrialSetup, log_hparams_config
from leo_tf.tuning.oracle import oracle_role, wait_for_chief
from leo_tf.tuning.space import OBJECTIVE, TuneConfig, TuningError, search_space

DEFAULT_SPACE_FILE = "tuning/default_space.gin"
PROJECT = "trials"
SEARCH_FILE = "search.json"
OUTPUT_FILES = ("trials.csv", "trials.md", "best.gin", "best_full.gin")


# ------------------------------------------------------------------ tuners


class _ProgressMixin:
  """One progress line per finished trial; the error of a failed one in its directory."""

  log: Callable[[str], None] = print
  short_names: Dict[str, str] = {}

  def on_trial_begin(self, trial):
    super().on_trial_begin(trial)
    self._trial_start = time.time()

  def on_trial_end(self, trial):
    try:
      super().on_trial_end(trial)  # the oracle scores the trial (or gives up the search)
    finally:
      self._report(self.oracle.get_trial(trial.trial_id),
                   time.time() - getattr(self, "_trial_start", time.time()))

  def _report(self, trial, seconds: float):
    oracle = self.oracle
    ended = getattr(oracle, "end_order", None)  # a worker's oracle client has no count
    done = f"{len(ended)}/{oracle.max_trials}" if oracle.max_trials and ended else ""
    values = " ".join(f"{self.short_names.get(k, k)}={trials.fmt(v)}"
                      for k, v in trial.hyperparameters.values.items()
                      if not k.startswith("tuner/"))
    if trial.status == "COMPLETED":
      best = oracle.get_best_trials(1)[0]
      outcome = (f"{OBJECTIVE} {trial.score:.4f} | best {best.score:.4f} "
                 f"(trial {best.trial_id})")
    else:
      outcome = f"{trial.status}: {_last_line(trial.message)}"
      _write_error(self.get_trial_dir(trial.trial_id), trial.message)
    self.log(f"[tune] trial {trial.trial_id} ({done}) done in {seconds:.0f} s: {outcome} | "
             f"{values}")


# TuneConfig.tuner -> keras-tuner's tuner of that kind, with the progress lines.
TUNER_CLASSES = {name: type(f"LEO{base.__name__}", (_ProgressMixin, base), {}) for name, base in (
    ("random", kt.RandomSearch), ("bayesian", kt.BayesianOptimization),
    ("hyperband", kt.Hyperband))}


def make_tuner(setup: TrialSetup, hypermodel: LEOHyperModel, overwrite: bool,
               log: Callable[[str], None]) -> kt.Tuner:
  tune = setup.tune
  common = dict(hypermodel=hypermodel, objective=kt.Objective(OBJECTIVE, "max"),
                directory=tune.output_dir, project_name=PROJECT, overwrite=overwrite,
                seed=tune.seed)
  budget = (dict(max_epochs=tune.max_epochs, factor=tune.hyperband_factor)
            if tune.tuner == "hyperband" else dict(max_trials=tune.max_trials))
  tuner = TUNER_CLASSES[tune.tuner](**budget, **common)
  # Hyperband has no cap of its own; a resumed search may be given more trials.
  tuner.oracle.max_trials = tune.max_trials
  tuner.log = log
  tuner.short_names = _short_names([p.binding for p in setup.space.params])
  return tuner


# ------------------------------------------------------------------ the search


@dataclasses.dataclass
class SearchResult:
  output_dir: str
  rows: List[Dict[str, Any]]
  best_trial: str
  best_value: float
  best_gin: str
  best_full_gin: str
  table: str
  seconds: float


def load_setup(gin_files: Sequence[str], bindings: Sequence[str] = (),
               space_files: Sequence[str] = (DEFAULT_SPACE_FILE,),
               **overrides) -> TrialSetup:
  """Parses the base config and the search-space files; flag values override TuneConfig."""
  if not gin_files:
    raise TuningError("give the base experiment config as --gin_file (see gin/experiments/)")
  paths = tuple(gin_config.resolve_gin_file(f) for f in list(gin_files) + list(space_files))
  with gin_config.scoped(paths, bindings):
    tune, space, pools = TuneConfig(), search_space(), threads.Threads()
  tune = dataclasses.replace(tune, **{k: v for k, v in overrides.items() if v is not None})
  return TrialSetup(paths, tuple(bindings), space, tune, pools)


def run_search(setup: TrialSetup, overwrite: bool = False,
               log: Callable[[str], None] = print) -> Optional[SearchResult]:
  """Runs (or resumes) the search, then writes the table and the best .gin files.

  In a distributed search (:func:`oracle_role`) the chief serves the oracle until every
  trial has ended and then writes the outputs; a worker runs trials until the chief
  says the search is over, and returns None.
  """
  # keras-tuner prints a failed trial's traceback to stderr when DEBUG is on (its default);
  # the one-line progress report says it, and error.txt keeps the traceback.
  kt_config.DEBUG = False
  setup.check_extremes()
  threads.configure(setup.threads, log=log)  # before keras-tuner's first op, as leo-train does
  out = setup.tune.output_dir
  # Before any work; the trials' runs are run directories below it.
  RunDir(out, "TuneConfig.output_dir").prepare()
  role = oracle_role()
  if role == "worker":
    if overwrite:
      raise TuningError("--overwrite is the chief's to give: a worker only joins a search")
    wait_for_chief(os.path.join(out, SEARCH_FILE), log)
    _check_same_search(out, setup)
    tuner = make_tuner(setup, LEOHyperModel(setup), False, log)
    log(f"[tune] worker {tuner.tuner_id} running trials of the search in {out} (oracle "
        f"at {os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']})")
    tuner.search(verbose=0)
    log(f"[tune] worker {tuner.tuner_id}: the chief ended the search")
    return None
  _claim_output_dir(out, setup, overwrite)
  tuner = make_tuner(setup, LEOHyperModel(setup), overwrite, log)
  log_hparams_config(tuner.project_dir, setup.space)
  _log_start(tuner, setup, log)
  if role == "chief":
    log(f"[tune] oracle chief serving at {os.environ['KERASTUNER_ORACLE_IP']}:"
        f"{os.environ['KERASTUNER_ORACLE_PORT']}; start the workers (leo-tune "
        "--tuner_id=<name> --oracle=<this address> with the same flags)")
  start = time.time()
  try:
    tuner.search(verbose=0)
  except RuntimeError as e:
    if "consecutive failures" not in str(e):
      raise
    raise TuningError(f"the search stopped after "
                      f"{tuner.oracle.max_consecutive_failed_trials} failed trials "
                      f"in a row; the last: {_last_line(str(e))} (full errors: "
                      f"{tuner.project_dir}/trial_*/error.txt)") from None
  # keras-tuner saves the oracle before it drops an ended trial from ongoing_trials: the
  # saved state would list the last trial as still running.
  tuner.oracle.save()
  return _finish(tuner, setup, time.time() - start, log)


def _log_start(tuner, setup: TrialSetup, log):
  tune = setup.tune
  finished = len(tuner.oracle.end_order)
  if finished:
    log(f"[tune] resuming the search in {tune.output_dir}: {finished} trial(s) finished, "
        f"up to {max(tune.max_trials - finished, 0)} to go")
  budget = (f"up to {tune.steps_per_trial}" if tune.tuner == "hyperband"
            else f"{tune.steps_per_trial}")
  log(f"[tune] {tune.tuner} search, {tune.max_trials} trials of {budget} steps "
      f"(validation every {tune.validate_every} steps on {tune.num_val_episodes} episodes) "
      f"over: " + "; ".join(p.describe() for p in setup.space.params))


def _finish(tuner, setup: TrialSetup, seconds: float, log) -> SearchResult:
  out = setup.tune.output_dir
  rows = trials.trial_rows(tuner, setup)
  best_trials = tuner.oracle.get_best_trials(1)
  if not best_trials:
    raise TuningError(f"no trial completed; see {tuner.project_dir}/trial_*/error.txt")
  best = best_trials[0]
  table = trials.markdown_table(rows, setup)
  files.atomic_write(os.path.join(out, "trials.md"), table + "\n")
  files.atomic_write(os.path.join(out, "trials.csv"), trials.csv_table(rows, setup))
  paths = [files.atomic_write(os.path.join(out, name),
                              trials.best_gin_text(setup, best, out, full))
           for name, full in (("best.gin", False), ("best_full.gin", True))]
  log(table)
  log(f"[tune] {len(rows)} trials in {out} ({seconds:.0f} s this run); best: trial "
      f"{best.trial_id}, {OBJECTIVE} {best.score:.4f}")
  log(f"[tune] reproduce it: leo-train --gin_file={paths[0]}   "
      f"(full length: --gin_file={paths[1]})")
  return SearchResult(out, rows, best.trial_id, float(best.score), paths[0], paths[1],
                      table, seconds)


# ------------------------------------------------------------------ resumption


def _search_record(setup: TrialSetup) -> Dict[str, Any]:
  """What search.json holds, as it reads back from the file (tuples become lists)."""
  tune = dataclasses.asdict(setup.tune)
  for name in ("max_trials", "output_dir"):  # a resumed search may ask for more trials
    tune.pop(name)
  return json.loads(json.dumps(dict(gin_files=setup.gin_files, bindings=setup.bindings,
                                    space=setup.space.as_list(), tune=tune)))


_RECORD_LABELS = dict(gin_files="gin files", bindings="bindings", space="search space",
                      tune="TuneConfig settings")


def _claim_output_dir(out: str, setup: TrialSetup, overwrite: bool) -> None:
  """Starts a fresh search or checks that the one found in ``out`` is the same search."""
  path = os.path.join(out, SEARCH_FILE)
  if overwrite:
    for name in (SEARCH_FILE,) + OUTPUT_FILES:
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, PROJECT), ignore_errors=True)
  elif os.path.exists(path):
    _check_same_search(out, setup)
    return
  elif os.path.isdir(os.path.join(out, PROJECT)):
    raise TuningError(f"{out}/{PROJECT} exists but {SEARCH_FILE} does not; pass "
                      "--overwrite or choose another --output_dir")
  files.atomic_write(path, json.dumps(_search_record(setup), indent=2) + "\n")


def _check_same_search(out: str, setup: TrialSetup) -> None:
  """Raises unless ``out`` holds search.json of a search with ``setup``'s settings."""
  path = os.path.join(out, SEARCH_FILE)
  if not os.path.exists(path):
    raise TuningError(f"{out} holds no search ({SEARCH_FILE} is missing): start the chief "
                      "with this --output_dir on a filesystem every worker shares")
  record = _search_record(setup)
  with open(path) as f:
    old = json.load(f)
  changed = [label for key, label in _RECORD_LABELS.items() if old.get(key) != record[key]]
  if changed:
    raise TuningError(
        f"{out} holds a search started with other {', '.join(changed)}; resume (or join) "
        "it with the same gin files, bindings, search space and TuneConfig, or pass "
        "--overwrite, or choose another --output_dir")


# ------------------------------------------------------------------ helpers


def _short_names(bindings: Sequence[str]) -> Dict[str, str]:
  """'LEOConfig.kl_weight' -> 'kl_weight' unless two bindings share the parameter name."""
  last = [b.rsplit(".", 1)[-1] for b in bindings]
  return {b: (s if last.count(s) == 1 else b) for b, s in zip(bindings, last)}


def _last_line(message: Optional[str]) -> str:
  """A trial's error in one line: its traceback's last, without keras-tuner's wrapper."""
  lines = [l.strip() for l in (message or "").strip().splitlines() if l.strip()]
  return lines[-1].split("FailedTrialError: ", 1)[-1] if lines else "(no message)"


def _write_error(trial_dir: str, message: Optional[str]) -> None:
  os.makedirs(trial_dir, exist_ok=True)
  files.atomic_write(os.path.join(trial_dir, "error.txt"), message or "")
