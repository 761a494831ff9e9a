"""leo-embed: writes <root>/<dataset>/<crop>/<split>_embeddings.pkl with a trained backbone.

  leo-embed --gin_file=backbone/embed_glyphs.gin \
      --gin_bindings="run_extraction.model_dir='runs/glyph_backbone'"

Splits whose file exists are kept unless --overwrite.
"""

from absl import flags

from leo_tf.cli import common

if "gin_file" not in flags.FLAGS:  # another entry point in this process defined them
  common.define_gin_flags()
flags.DEFINE_bool("overwrite", False, "Rewrite embedding files that exist.")
FLAGS = flags.FLAGS


def main(argv):
  common.check_arguments(argv, 'e.g. backbone/embed_glyphs.gin')
  common.run_guarded(_embed)


def _embed():
  import gin
  from leo_tf import gin_config
  from leo_tf.backbone import pipeline
  gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  for name in ("model_dir", "root", "dataset"):
    try:
      gin.query_parameter(f"run_extraction.{name}")
    except ValueError:
      common.fail(f"bind run_extraction.{name} (see gin/backbone/embed_glyphs.gin)")
  for split, path in pipeline.run_extraction(overwrite=FLAGS.overwrite).items():
    print(f"{split}: {path}")


def run():
  common.run_app(main)


if __name__ == "__main__":
  run()
