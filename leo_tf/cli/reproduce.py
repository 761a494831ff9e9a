"""leo-reproduce: the paper's table from the authors' four final-code experiments.

  leo-reproduce --embeddings_root=/data/leo_embeddings [--seeds=0,1,2] \
      [--experiments=mini_1shot,mini_5shot] [--protocol=trainval|train] [--steps=N]

Each experiment x seed is a leo-train run under --output_dir (resumed when run again);
prints the table and writes it as table.json and table.md there.
"""

from absl import flags

from leo_tf.cli import common

flags.DEFINE_string("embeddings_root", None,
                    "Root of the embeddings in the released layout: "
                    "<root>/<miniImageNet|tieredImageNet>/center/<split>_embeddings.pkl.")
flags.DEFINE_string("output_dir", "runs/reproduce", "Runs and the table go here.")
flags.DEFINE_list("experiments", ["mini_1shot", "mini_5shot", "tiered_1shot", "tiered_5shot"],
                  "Which of the four final-code experiments to run.")
flags.DEFINE_list("seeds", ["0"], "Meta-training seeds (TrainConfig.seed), e.g. 0,1,2.")
flags.DEFINE_enum("protocol", "trainval", ["trainval", "train"],
                  "trainval: meta-train on train + val, select on val (how the authors "
                  "produced their numbers); train: validation classes held out.")
flags.DEFINE_integer("steps", None, "Overrides TrainConfig.num_steps (e.g. a short test).")
common.define_gin_flags()
FLAGS = flags.FLAGS


def _seeds():
  """--seeds as integers; also run first (entry_point's before) to fail before TF starts."""
  try:
    return [int(s) for s in FLAGS.seeds]
  except ValueError:
    common.fail(f"--seeds must be integers, got {','.join(FLAGS.seeds)}")


def _reproduce():
  from leo_tf import reproduce  # pylint: disable=import-outside-toplevel
  data = reproduce.reproduce(FLAGS.embeddings_root, FLAGS.output_dir, FLAGS.experiments,
                             _seeds(), FLAGS.protocol, FLAGS.steps, FLAGS.gin_file,
                             FLAGS.gin_bindings)
  paths = reproduce.write_table(data, FLAGS.output_dir)
  print()
  print(reproduce.markdown(data), end="")
  seconds = [v["seconds"] for row in data["rows"] for v in row["seeds"].values()
             if v and v["seconds"] is not None]
  print(f"\n[reproduce] table written to {paths['json']} and {paths['markdown']}; wall time "
        f"of its {len(seconds)} timed runs {sum(seconds):.0f} s")


run = common.entry_point(_reproduce, before=_seeds, required={
    "embeddings_root": "the folder holding miniImageNet/ and tieredImageNet/"})

if __name__ == "__main__":
  run()
