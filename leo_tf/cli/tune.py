"""leo-tune: search LEO hyperparameters with keras-tuner; resumes an interrupted search.

  leo-tune --gin_file=experiments/glyphs_5way1shot.gin --tuner=bayesian --max_trials=20
  leo-tune --gin_file=experiments/mini_final_1shot.gin \
      --gin_bindings="EmbeddingSource.root='/data/leo_embeddings'" \
      --space_file=my_space.gin --tuner=hyperband --output_dir=runs/tune_mini1

Rerunning the same command continues the search in --output_dir. The best trial is
written as <output_dir>/best.gin: `leo-train --gin_file=<output_dir>/best.gin`.
"""

import logging as py_logging

from absl import app, flags, logging

from leo_tf.cli import common

flags.DEFINE_multi_string("space_file", ["tuning/default_space.gin"],
                          "Gin file(s) declaring search_space.params and TuneConfig.")
flags.DEFINE_enum("tuner", None, ["random", "bayesian", "hyperband"],
                  "Overrides TuneConfig.tuner.")
flags.DEFINE_integer("max_trials", None, "Overrides TuneConfig.max_trials (the total, "
                     "counting trials an interrupted run already finished).")
flags.DEFINE_string("output_dir", None, "Overrides TuneConfig.output_dir.")
flags.DEFINE_bool("overwrite", False, "Discard a search found in the output directory.")
common.define_gin_flags()
FLAGS = flags.FLAGS


class _NoRetracingWarnings(py_logging.Filter):
  # Every trial builds a new model, so every trial traces its functions anew: expected.
  def filter(self, record):
    return "triggered tf.function retracing" not in record.getMessage()


def quiet_tensorflow():
  """Keeps the output to one line per trial (each trial's own log is in its directory)."""
  logging.set_verbosity(logging.WARNING)
  py_logging.getLogger("tensorflow").addFilter(_NoRetracingWarnings())


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.gin_file:
    common.fail("give the base experiment as --gin_file (see gin/experiments/)")
  quiet_tensorflow()
  from leo_tf.tuning.search import load_setup, run_search
  try:
    setup = load_setup(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.space_file,
                       tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
                       output_dir=FLAGS.output_dir)
    run_search(setup, overwrite=FLAGS.overwrite)
  except common.user_errors() as e:
    common.fail(str(e))
  except KeyboardInterrupt:
    common.fail("interrupted; rerun the same command to resume (finished trials are "
                "kept)", code=130)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
