"""leo-pretrain: supervised pre-training of the WRN backbone.

  leo-pretrain --gin_file=backbone/pretrain_glyphs.gin \
      --gin_bindings="run_pretraining.model_dir='runs/glyph_backbone'"

Gin files are looked up as given, then relative to the shipped gin/ directory.
Re-running with the same model_dir resumes from the latest checkpoint.
"""

from leo_tf.cli import common

common.define_gin_flags()


def _pretrain():
  from leo_tf.backbone import pipeline  # pylint: disable=import-outside-toplevel
  common.parse_gin(required={"run_pretraining.model_dir":
                             "no model directory: bind run_pretraining.model_dir"})
  result = pipeline.run_pretraining()
  held_out = ("n/a" if result.held_out_accuracy is None
              else f"{result.held_out_accuracy:.3f}")
  print(f"done: step {result.final_step}, held-out accuracy {held_out}, "
        f"backbone {result.backbone_path}")


run = common.entry_point(_pretrain, gin_hint="e.g. backbone/pretrain_glyphs.gin", full_disk=(
    f"{common.FULL_DISK}: leo-pretrain resumes from its last checkpoint"))

if __name__ == "__main__":
  run()
