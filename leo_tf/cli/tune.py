"""leo-tune: search LEO hyperparameters with keras-tuner; resumes an interrupted search.

  leo-tune --gin_file=experiments/glyphs_5way1shot.gin --tuner=bayesian --max_trials=20
  leo-tune --gin_file=experiments/mini_final_1shot.gin \
      --gin_bindings="EmbeddingSource.root='/data/leo_embeddings'" \
      --space_file=my_space.gin --tuner=hyperband --output_dir=runs/tune_mini1

Rerunning the same command continues the search in --output_dir. The best trial is
written as <output_dir>/best.gin: `leo-train --gin_file=<output_dir>/best.gin`.

On many machines (keras-tuner's distributed mode; --output_dir on a shared filesystem):
  leo-tune <flags> --tuner_id=chief --oracle=host0:8000     # the oracle, writes best.gin
  leo-tune <flags> --tuner_id=tuner0 --oracle=host0:8000    # one per worker, same flags
(or KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT in the environment).
"""

import logging as py_logging

from absl import flags, logging

from leo_tf.cli import common

flags.DEFINE_multi_string("space_file", ["tuning/default_space.gin"],
                          "Gin file(s) declaring search_space.params and TuneConfig.")
flags.DEFINE_enum("tuner", None, ["random", "bayesian", "hyperband"],
                  "Overrides TuneConfig.tuner.")
flags.DEFINE_integer("max_trials", None, "Overrides TuneConfig.max_trials (the total, "
                     "counting trials an interrupted run already finished).")
flags.DEFINE_string("output_dir", None, "Overrides TuneConfig.output_dir.")
flags.DEFINE_bool("overwrite", False, "Discard a search found in the output directory.")
flags.DEFINE_string("tuner_id", None, "Distributed search: 'chief' serves the oracle, any "
                    "other name is a worker (sets KERASTUNER_TUNER_ID).")
flags.DEFINE_string("oracle", None, "Distributed search: the chief's host:port (sets "
                    "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT).")
common.define_gin_flags()
FLAGS = flags.FLAGS


def quiet_tensorflow():
  """Keeps the output to one line per trial (each trial's own log is in its directory),
  unless the user asked for a verbosity (-v / --verbosity)."""
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # Every trial builds a new model, so every trial traces its functions anew: expected.
  py_logging.getLogger("tensorflow").addFilter(
      lambda record: "triggered tf.function retracing" not in record.getMessage())


def _tune():
  # pylint: disable=import-outside-toplevel
  from leo_tf.tuning.oracle import oracle_role, use_oracle
  from leo_tf.tuning.search import load_setup, run_search
  use_oracle(FLAGS.oracle, FLAGS.tuner_id)
  oracle_role()  # a bad or busy address: one line before anything starts
  setup = load_setup(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.space_file,
                     tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
                     output_dir=FLAGS.output_dir)
  run_search(setup, overwrite=FLAGS.overwrite)


run = common.entry_point(_tune, gin_hint="the base experiment, see gin/experiments/",
                         before=quiet_tensorflow, interrupted="interrupted; rerun the same "
                         "command to resume (finished trials are kept)")

if __name__ == "__main__":
  run()
