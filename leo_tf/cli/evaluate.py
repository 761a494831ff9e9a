"""leo-eval: evaluate a leo-train output directory with the config saved there.

  leo-eval --checkpoint_dir=runs/glyphs_1shot [--which=best|latest]
      [--gin_bindings="EvalConfig.num_episodes=1000"]
"""

from absl import app, flags

from leo_tf.cli import common

flags.DEFINE_string("checkpoint_dir", None, "A leo-train output directory.")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to evaluate.")
flags.DEFINE_multi_string("gin_bindings", [], "Overrides on top of the saved config.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.checkpoint_dir:
    common.fail("--checkpoint_dir is required")
  from leo_tf import gin_config
  from leo_tf.data.source import EmbeddingSource
  from leo_tf.leo.config import LEOConfig
  from leo_tf.leo.evaluation import EvalConfig
  from leo_tf.leo.experiment import test_result
  from leo_tf.leo.trainer import load_model
  try:
    gin_config.parse_saved(FLAGS.checkpoint_dir, FLAGS.gin_bindings)
    source, model_config, eval_config = EmbeddingSource(), LEOConfig(), EvalConfig()
    data = source.load(eval_config.split)
    model = load_model(FLAGS.checkpoint_dir, model_config, data.dim, FLAGS.which)
    result = test_result(model, data, model_config, eval_config, print)
    print(f"[result] {FLAGS.which} checkpoint, {eval_config.split}: accuracy {result}")
  except common.user_errors() as e:
    common.fail(str(e))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
