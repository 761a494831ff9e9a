"""leo-eval: evaluate a leo-train output directory with the config saved there.

  leo-eval --checkpoint_dir=runs/glyphs_1shot [--which=best|latest]
      [--gin_bindings="EvalConfig.num_episodes=1000"]
      [--gin_bindings="LEOConfig.ensemble_samples=10"]   # test-time ensemble

  # LEO, its ablations, MAML and two simple baselines on the same test episodes:
  leo-eval --checkpoint_dir=runs/glyphs_1shot --compare \
      [--compare_dirs=deterministic=runs/det,random_prior=runs/rp,maml=runs/maml] \
      [--compare_train_steps=2000] [--compare_output=runs/glyphs_1shot/compare] \
      [--gin_file=analysis/compare.gin]
"""

from absl import flags

from leo_tf.analysis import compare_config
from leo_tf.cli import common

common.define_run_flags("evaluate", gin_files=True)
flags.DEFINE_bool("compare", False,
                  "Evaluate LEO, its ablations and baselines side by side (CSV, Markdown, "
                  "reliability diagram).")
flags.DEFINE_list("compare_dirs", [],
                  "name=dir pairs of meta-trained ablation runs; names: "
                  f"{', '.join(compare_config.ABLATION_GIN)}.")
flags.DEFINE_integer("compare_train_steps", None,
                     "Meta-train ablations missing from --compare_dirs for this many steps "
                     "(sets CompareConfig.ablation_train_steps); reused when present.")
flags.DEFINE_string("compare_output", None,
                    "Where the table and plots go (default <checkpoint_dir>/compare).")
FLAGS = flags.FLAGS


def parse_pairs(pairs):
  """['a=x', 'b=y'] -> {'a': 'x', 'b': 'y'} with a clear error on malformed items."""
  result = {}
  for pair in pairs:
    name, sep, path = pair.partition("=")
    if not sep or not name or not path:
      common.fail(f"--compare_dirs wants name=dir pairs, got {pair!r}")
    result[name.strip()] = path.strip()
  return result


def _evaluate():
  # pylint: disable=import-outside-toplevel
  from leo_tf import saved_config
  from leo_tf.analysis import compare, methods
  from leo_tf.leo.run import open_run
  from leo_tf.runtime import threads
  ablation_dirs = parse_pairs(FLAGS.compare_dirs)
  bindings = list(FLAGS.gin_bindings)
  if FLAGS.compare_train_steps is not None:
    bindings.append(f"CompareConfig.ablation_train_steps = {FLAGS.compare_train_steps}")
  cfg, pools = saved_config.read_saved(
      FLAGS.checkpoint_dir, lambda: (compare_config.CompareConfig(), threads.Threads()),
      bindings, FLAGS.gin_file)
  # The run's thread pools (leo-train's) before TensorFlow starts: --compare may
  # meta-train ablations in this process.
  threads.configure(pools)
  run = open_run(FLAGS.checkpoint_dir, FLAGS.which, bindings, FLAGS.gin_file,
                 fallback=FLAGS.compare)
  if FLAGS.compare:
    compare.run_comparison(run, cfg, FLAGS.compare_output, ablation_dirs, bindings,
                           FLAGS.gin_file)
  else:
    print(f"[result] {FLAGS.which} checkpoint, {run.configs.eval.split}: accuracy "
          f"{methods.evaluate_run(run, cfg.ensemble_seed)}")


run = common.entry_point(_evaluate, required=("checkpoint_dir",))

if __name__ == "__main__":
  run()
