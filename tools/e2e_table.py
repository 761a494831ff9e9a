"""LEO runs on their own features (a frozen run's embedding files, an end-to-end run's
embeddings of its meta-trained backbone), each beside nearest class mean and logistic
regression on the same features, all on the same test episodes, with paired differences
to the first run's LEO (docs/results.md, "End-to-end LEO").

Usage: python tools/e2e_table.py "NAME=RUN_DIR" ... [--episodes=N]

The episodes are the same for every run because they are a function of the test split's
class sizes and the EvalConfig seed, and an end-to-end run's embeddings have the rows of
the frozen files (checked here). The baselines fit their hyperparameters on validation
episodes of each run's own features, as leo-eval --compare does.
"""
import sys
import time

from leo_tf.runtime.quiet_start import start_tensorflow

start_tensorflow()
# pylint: disable=wrong-import-position
import numpy as np

from leo_tf.analysis import methods
from leo_tf.analysis.compare_config import CompareConfig
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.run import open_run


def main(argv):
  episodes = None
  runs = {}
  for arg in argv:
    if arg.startswith("--episodes="):
      episodes = int(arg.split("=", 1)[1])
    else:
      name, path = arg.split("=", 1)
      runs[name] = path
  results, keys, first = {}, None, None
  for name, path in runs.items():
    run = open_run(path, "best", fallback=True)
    cfg, ev = run.configs, run.configs.eval
    n = episodes or ev.num_episodes
    data = run.load(ev.split)
    if keys is None:
      keys, first = data.keys, (ev.seed, n)
    elif not np.array_equal(keys, data.keys) or (ev.seed, n) != first:
      sys.exit(f"error: {path}: its test rows or protocol differ from the first run's")
    sampler = EpisodeSampler.for_model(data, cfg.model, ev.num_queries, cfg.episodes)
    print(f"[{name}] {path} ({run.which} checkpoint), features {run.source.root}", flush=True)
    methods_of_run = [("LEO", methods.leo_predict(run.model))] + methods.baseline_methods(
        CompareConfig(), run.source, cfg.model, ev, print, cfg.episodes)
    for label, predict in methods_of_run:
      start = time.time()
      out = methods.evaluate_method(label, predict, sampler, n, ev.batch_size, ev.seed,
                                    progress=False)
      results[f"{label} ({name})"] = out.accuracy
      print(f"[{name}] {label}: {out.accuracy} ({time.time() - start:.0f} s)", flush=True)
  reference = next(iter(results))
  print(f"\n| method (features) | accuracy (%) | vs {reference}, paired (pp) |\n|---|---|---|")
  for label, accuracy in results.items():
    diff, ci = methods.paired_difference(accuracy, results[reference])
    paired = "-" if label == reference else f"{100 * diff:+.2f} +- {100 * ci:.2f}"
    print(f"| {label} | {100 * accuracy.mean:.2f} +- {100 * accuracy.ci95:.2f} | {paired} |")


if __name__ == "__main__":
  main(sys.argv[1:])
