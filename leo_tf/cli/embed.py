"""leo-embed: writes <root>/<dataset>/<crop>/<split>_embeddings.pkl with a trained backbone.

  leo-embed --gin_file=backbone/embed_glyphs.gin \
      --gin_bindings="run_extraction.model_dir='runs/glyph_backbone'"

Splits whose file exists are kept unless --overwrite.
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
flags.DEFINE_bool("overwrite", False, "Rewrite existing embedding files.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.gin_file:
    raise app.UsageError("give at least one --gin_file (e.g. backbone/embed_glyphs.gin)")
  try:
    gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    paths = pipeline.run_extraction(overwrite=FLAGS.overwrite)
  except RuntimeError as e:
    if "Required bindings" not in str(e):  # gin's message for a missing gin.REQUIRED
      raise
    print(f"leo-embed: error: {e}", file=sys.stderr)
    return 1
  except (gin_config.GinConfigError, ValueError, FileNotFoundError) as e:
    print(f"leo-embed: error: {e}", file=sys.stderr)
    return 1
  for split, path in paths.items():
    print(f"{split}: {path}")
  return 0


def run():
  app.run(main)


if __name__ == "__main__":
  run()
