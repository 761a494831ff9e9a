"""leo-export: a leo-train output directory -> a versioned SavedModel for TF Serving.

  leo-export --checkpoint_dir=runs/mini1 --export_base=/models/leo [--model_version=N]
      [--which=best|latest] [--backbone=runs/wrn/backbone.keras]
      [--gin_bindings="LEOConfig.finetune_steps_test=10"]

Writes <export_base>/<version>/ (default version: one more than the largest there).
See docs/serving.md for the signatures and a REST request.
"""

from absl import flags

from leo_tf.cli import common

flags.DEFINE_string("checkpoint_dir", None, "A leo-train output directory.")
flags.DEFINE_string("export_base", None, "TF Serving model base path; versions go below.")
# (--version is every script's version print.)
flags.DEFINE_integer("model_version", None, "TF Serving version number of the export "
                     "(default: one more than the largest under --export_base).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to export.")
flags.DEFINE_string("backbone", None, "A saved backbone (.keras file or leo-pretrain "
                    "directory): adds the classify_images signature.")
flags.DEFINE_multi_string("gin_bindings", [], "Overrides on top of the saved config.")
FLAGS = flags.FLAGS


def main(argv):
  common.check_arguments(argv, required=("checkpoint_dir", "export_base"))
  common.run_guarded(_export)


def _export():
  from leo_tf.serving.export import export_checkpoint  # pylint: disable=import-outside-toplevel
  export_checkpoint(FLAGS.checkpoint_dir, FLAGS.export_base, FLAGS.model_version, FLAGS.which,
                    FLAGS.backbone, FLAGS.gin_bindings)


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
