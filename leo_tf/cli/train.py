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


def _train():
  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  common.parse_gin(
      [f"run_experiment.output_dir = {FLAGS.output_dir!r}"] if FLAGS.output_dir else [],
      required={"run_experiment.output_dir": "no output directory: pass --output_dir or "
                "bind run_experiment.output_dir"})
  run_experiment(RunConfigs.from_gin())


run = common.entry_point(_train, gin_hint="see gin/experiments/", full_disk=(
    f"{common.FULL_DISK}: leo-train resumes from its last checkpoint"))

if __name__ == "__main__":
  run()
