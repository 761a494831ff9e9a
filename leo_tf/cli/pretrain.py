"""leo-pretrain: supervised pre-training of the WRN backbone.

  leo-pretrain --gin_file=backbone/pretrain_glyphs.gin \
      --gin_bindings="run_pretraining.model_dir='runs/glyph_backbone'"

Gin files are looked up as given, then relative to the shipped gin/ directory.
Re-running with the same model_dir resumes from the latest checkpoint.
"""

import sys

from absl import app
from absl import flags

from leo_tf.backbone import gin_config
from leo_tf.backbone import pipeline

# Other entry points define the same gin flags; define them once per process.
if "gin_file" not in flags.FLAGS:
  flags.DEFINE_multi_string("gin_file", [], "Gin file(s) to parse, in order.")
if "gin_bindings" not in flags.FLAGS:
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after the files.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.gin_file:
    raise app.UsageError("give at least one --gin_file (e.g. backbone/pretrain_glyphs.gin)")
  try:
    gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    result = pipeline.run_pretraining()
  except RuntimeError as e:
    if "Required bindings" not in str(e):  # gin's message for a missing gin.REQUIRED
      raise
    print(f"leo-pretrain: error: {e}", file=sys.stderr)
    return 1
  except (gin_config.GinConfigError, ValueError, FileNotFoundError) as e:
    print(f"leo-pretrain: error: {e}", file=sys.stderr)
    return 1
  held_out = ("n/a" if result.held_out_accuracy is None
              else f"{result.held_out_accuracy:.3f}")
  print(f"done: step {result.final_step}, held-out accuracy {held_out}, "
        f"backbone {result.backbone_path}")
  return 0


def run():
  app.run(main)


if __name__ == "__main__":
  run()
