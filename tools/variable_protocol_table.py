"""LEO runs beside nearest class mean and logistic regression on the same variable test
episodes (VariableEpisodes as gin/tasks/variable.gin binds them), with paired differences
to the last run.

Usage: python tools/variable_protocol_table.py [--cache=DIR] [--bind=BINDING ...] \
           "NAME=RUN_DIR" ... (docs/results.md)
Every run is evaluated on the first run's sampler; its test seed and episode count are
the first run's EvalConfig's. The baselines fit their hyperparameters as in leo-eval.
``--bind`` overrides the protocol (e.g. "VariableEpisodes.max_ways = 10"). ``--cache``
keeps each row's per-episode accuracies (DIR/<row>.npy) and reuses them, so rows can be
computed in separate runs (the same first run, so the same episodes) and paired later.
"""
import os
import sys
import time

import numpy as np

from leo_tf.runtime.quiet_start import start_tensorflow
start_tensorflow()
from leo_tf.analysis import methods
from leo_tf.analysis.compare_config import CompareConfig
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.evaluation import EvalResult
from leo_tf.leo.run import open_run

PROTOCOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "gin", "tasks", "variable.gin")
options = [a for a in sys.argv[1:] if a.startswith("--")]
cache = next((a.split("=", 1)[1] for a in options if a.startswith("--cache=")), None)
VAR = [line.strip() for line in open(PROTOCOL)
       if line.startswith("VariableEpisodes.") and not line.startswith("VariableEpisodes.uses")]
VAR = ["VariableEpisodes.uses = ['test']"] + VAR + [
    a.split("=", 1)[1] for a in options if a.startswith("--bind=")]
runs = dict(arg.split("=", 1) for arg in sys.argv[1:] if not arg.startswith("--"))
print("protocol:", "; ".join(VAR), flush=True)


def row(name, evaluate):
  """Per-episode accuracies of one row: from the cache, or evaluated (and cached)."""
  path = cache and os.path.join(cache, name.replace("/", "_") + ".npy")
  if path and os.path.exists(path):
    print(f"{name}: cached {path}", flush=True)
    return EvalResult(np.load(path))
  t = time.time()
  result = evaluate().accuracy
  print(f"{name}: {result.mean*100:.2f} +- {result.ci95*100:.2f} ({time.time()-t:.0f} s)",
        flush=True)
  if path:
    os.makedirs(cache, exist_ok=True)
    np.save(path, result.accuracies)
  return result


results, sampler = {}, None
for name, path in runs.items():
  run = open_run(path, "best", VAR)
  cfg, ev = run.configs, run.configs.eval
  print(name, "episodes:", cfg.episodes, "eval seed", ev.seed, "episodes", ev.num_episodes,
        flush=True)
  s = sampler or EpisodeSampler.for_model(run.load(ev.split), cfg.model, ev.num_queries,
                                          cfg.episodes)
  results[name] = row(name, lambda: methods.evaluate_method(
      name, methods.leo_predict(run.model), s, ev.num_episodes, ev.batch_size, ev.seed,
      progress=False))
  if sampler is None:
    sampler, base_cfg, base_ev, base_run = s, cfg, ev, run
cc = CompareConfig()
for label, predict in methods.baseline_methods(cc, base_run.source, base_cfg.model, base_ev,
                                                print, base_cfg.episodes):
  results[label] = row(label, lambda: methods.evaluate_method(
      label, predict, sampler, base_ev.num_episodes, base_ev.batch_size, base_ev.seed,
      progress=False))
ref = list(runs)[-1]
print(f"\n| method | accuracy (%) | vs {ref}, paired (pp) |\n|---|---|---|")
for name, r in results.items():
  d, ci = methods.paired_difference(r, results[ref])
  diff = "-" if name == ref else f"{d*100:+.2f} +- {ci*100:.2f}"
  print(f"| {name} | {r.mean*100:.2f} +- {r.ci95*100:.2f} | {diff} |")
