"""leo-embed: writes <root>/<dataset>/<crop>/<split>_embeddings.pkl with a trained backbone.

  leo-embed --gin_file=backbone/embed_glyphs.gin \
      --gin_bindings="run_extraction.model_dir='runs/glyph_backbone'"

Splits whose file exists are kept unless --overwrite.
"""

from absl import flags

from leo_tf.cli import common

common.define_gin_flags()
flags.DEFINE_bool("overwrite", False, "Rewrite embedding files that exist.")
FLAGS = flags.FLAGS


def _embed():
  from leo_tf.backbone import pipeline  # pylint: disable=import-outside-toplevel
  common.parse_gin(required={
      f"run_extraction.{name}": f"bind run_extraction.{name} (see "
      "gin/backbone/embed_glyphs.gin)" for name in ("model_dir", "root", "dataset")})
  for split, path in pipeline.run_extraction(overwrite=FLAGS.overwrite).items():
    print(f"{split}: {path}")


run = common.entry_point(_embed, gin_hint="e.g. backbone/embed_glyphs.gin")

if __name__ == "__main__":
  run()
