"""leo-export: a leo-train output directory -> a versioned SavedModel for TF Serving.

  leo-export --checkpoint_dir=runs/mini1 --export_base=/models/leo [--model_version=N]
      [--which=best|latest] [--backbone=runs/wrn/backbone.keras]
      [--gin_bindings="LEOConfig.finetune_steps_test=10"]

Writes <export_base>/<version>/ (default version: one more than the largest there).
See docs/serving.md for the signatures and a REST request.
"""

from absl import flags

from leo_tf.cli import common

common.define_run_flags("export")
flags.DEFINE_string("export_base", None, "TF Serving model base path; versions go below.")
# (--version is every script's version print.)
flags.DEFINE_integer("model_version", None, "TF Serving version number of the export "
                     "(default: one more than the largest under --export_base).")
flags.DEFINE_string("backbone", None, "A saved backbone (.keras file or leo-pretrain "
                    "directory): adds the classify_images signature (an end-to-end run "
                    "has it by default, with the backbone it meta-trained).")
FLAGS = flags.FLAGS


def _export():
  from leo_tf.serving.export import export_checkpoint  # pylint: disable=import-outside-toplevel
  export_checkpoint(FLAGS.checkpoint_dir, FLAGS.export_base, FLAGS.model_version, FLAGS.which,
                    FLAGS.backbone, FLAGS.gin_bindings)


run = common.entry_point(
    _export, required=("checkpoint_dir", "export_base"),
    full_disk=f"{common.FULL_DISK}; nothing was exported",
    version_value="the export's version number is --model_version={0}")

if __name__ == "__main__":
  run()
