"""leo-visualize: the paper's Figure 2, a t-SNE of latent codes before/after adaptation.

  leo-visualize --checkpoint_dir=runs/glyphs_1shot --num_tasks=1000 \
      --output=runs/glyphs_1shot/latents_tsne.png [--split=val] [--perplexity=30]

Tasks are N-way K-shot as the run was trained (the paper shows 5-way 1-shot),
sampled from the validation split with a fixed seed.
"""

from absl import flags

from leo_tf.cli import common

common.define_run_flags("load")
flags.DEFINE_integer("num_tasks", 1000, "Validation tasks whose codes are embedded.")
flags.DEFINE_string("output", None, "PNG path (default <checkpoint_dir>/latents_tsne.png).")
flags.DEFINE_string("split", "val", "Split the tasks come from.")
flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity.")
flags.DEFINE_integer("seed", 0, "Seed of the tasks, of t-SNE and of the highlighted classes.")
flags.DEFINE_integer("batch_size", 50, "Tasks adapted at once.")
FLAGS = flags.FLAGS


def _check_flags():
  if FLAGS.num_tasks < 2:
    common.fail("--num_tasks must be >= 2")
  if FLAGS.batch_size < 1:
    common.fail(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  if not FLAGS.perplexity > 0:
    common.fail(f"--perplexity must be > 0, got {FLAGS.perplexity:g}")


def _visualize():
  # pylint: disable=import-outside-toplevel
  from leo_tf.analysis import tsne
  from leo_tf.data.episodes import EpisodeSampler
  from leo_tf.leo.run import open_run
  from leo_tf.runtime import outputs
  from leo_tf.runtime.rundir import RunDir
  output = FLAGS.output or RunDir(FLAGS.checkpoint_dir, "--checkpoint_dir").latents_tsne
  outputs.writable_file(output, "--output")  # before minutes of adaptation and t-SNE
  run = open_run(FLAGS.checkpoint_dir, FLAGS.which, FLAGS.gin_bindings)
  if not run.model.latent_space:
    common.fail("this run is MAML: it has no latent space to visualise")
  sampler = EpisodeSampler.for_model(run.load(FLAGS.split), run.configs.model, 1)
  codes = tsne.collect_latents(run.model, sampler, FLAGS.num_tasks, FLAGS.batch_size,
                               FLAGS.seed)
  print(f"[tsne] embedding {2 * codes.initial.shape[0]} codes of "
        f"{codes.initial.shape[1]} dimensions (sklearn reports its stages)...", flush=True)
  points = tsne.embed_tsne(codes, FLAGS.perplexity, FLAGS.seed, verbose=1)
  tsne.plot_latent_tsne(points, codes, output, seed=FLAGS.seed, class_names=sampler.class_names)
  print(f"[tsne] wrote {output}")


run = common.entry_point(_visualize, required=("checkpoint_dir",), before=_check_flags)

if __name__ == "__main__":
  run()
