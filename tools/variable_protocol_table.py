"""LEO runs beside nearest class mean and logistic regression on the same variable test
episodes (VariableEpisodes, the protocol below), with paired differences to the last run.

Usage: python tools/variable_protocol_table.py "NAME=RUN_DIR" ... (docs/results.md)
Every run is evaluated on the first run's sampler; its test seed and episode count are
the first run's EvalConfig's. The baselines fit their hyperparameters as in leo-eval.
"""
import sys
import time
from leo_tf.runtime.quiet_start import start_tensorflow
start_tensorflow()
from leo_tf.analysis import methods
from leo_tf.analysis.compare_config import CompareConfig
from leo_tf.data.episodes import EpisodeSampler, VariableEpisodes
from leo_tf.leo.run import open_run

VAR = ["VariableEpisodes.uses = ['test']", "VariableEpisodes.min_ways = 5",
       "VariableEpisodes.max_ways = 10", "VariableEpisodes.max_support = 50",
       "VariableEpisodes.max_shots = 10", "VariableEpisodes.max_queries = 10"]
runs = dict(arg.split("=", 1) for arg in sys.argv[1:])
results, sampler = {}, None
for name, path in runs.items():
  run = open_run(path, "best", VAR)
  cfg, ev = run.configs, run.configs.eval
  var = cfg.episodes
  print(name, "episodes:", var, "eval seed", ev.seed, "episodes", ev.num_episodes, flush=True)
  data = run.load(ev.split)
  s = sampler or EpisodeSampler.for_model(data, cfg.model, ev.num_queries, var)
  t = time.time()
  results[name] = methods.evaluate_method(name, methods.leo_predict(run.model), s,
                                          ev.num_episodes, ev.batch_size, ev.seed,
                                          progress=False)
  print(f"{name}: {results[name].accuracy.mean*100:.2f} +- {results[name].accuracy.ci95*100:.2f}"
        f" ({time.time()-t:.0f} s)", flush=True)
  if sampler is None:
    sampler, base_cfg, base_ev, base_run = s, cfg, ev, run
cc = CompareConfig()
for label, predict in methods.baseline_methods(cc, base_run.source, base_cfg.model, base_ev,
                                                print, base_cfg.episodes):
  t = time.time()
  results[label] = methods.evaluate_method(label, predict, sampler, base_ev.num_episodes,
                                           base_ev.batch_size, base_ev.seed, progress=False)
  print(f"{label}: {results[label].accuracy.mean*100:.2f} ({time.time()-t:.0f} s)", flush=True)
ref = list(runs)[-1]
print(f"\n| method | accuracy (%) | vs {ref}, paired (pp) |\n|---|---|---|")
for name, r in results.items():
  d, ci = methods.paired_difference(r.accuracy, results[ref].accuracy)
  diff = "-" if name == ref else f"{d*100:+.2f} +- {ci*100:.2f}"
  print(f"| {name} | {r.accuracy.mean*100:.2f} +- {r.accuracy.ci95*100:.2f} | {diff} |")
