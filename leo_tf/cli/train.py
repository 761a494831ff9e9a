"""leo-train: meta-train LEO as the gin files say, then evaluate on the test split.

  leo-train --gin_file=experiments/glyphs_5way1shot.gin
  leo-train --gin_file=experiments/mini_final_1shot.gin \
      --gin_bindings="EmbeddingSource.root='/data/leo_embeddings'" \
      --gin_bindings="run_experiment.output_dir='runs/mini1'"
"""

from absl import flags

from leo_tf.cli import common

flags.DEFINE_string("output_dir", None, "Overrides run_experiment.output_dir.")
common.define_gin_flags()
FLAGS = flags.FLAGS


def main(argv):
  common.check_arguments(argv, 'see gin/experiments/')
  common.run_guarded(_train)


def _train():
  import gin  # pylint: disable=import-outside-toplevel
  from leo_tf import gin_config  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.experiment import run_experiment  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.run import RunConfigs  # pylint: disable=import-outside-toplevel
  bindings = list(FLAGS.gin_bindings)
  if FLAGS.output_dir:
    bindings.append(f"run_experiment.output_dir = {FLAGS.output_dir!r}")
  gin_config.parse(FLAGS.gin_file, bindings)
  try:
    gin.query_parameter("run_experiment.output_dir")
  except ValueError:
    common.fail("no output directory: pass --output_dir or bind run_experiment.output_dir")
  run_experiment(RunConfigs.from_gin())


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
