"""The paper's Figure 2: a joint t-SNE of latent codes before and after adaptation.

For many validation tasks we collect each class's encoder output z_n (the posterior
mean, as used at test time) and its adapted code z_n', embed all 2 * tasks * N codes
jointly with t-SNE, and draw them (a) coloured by stage (before: blue, after: orange),
(b) coloured by dataset class, and (c, d) with two classes picked at random highlighted.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from leo_tf.analysis.progress import ProgressBar
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.evaluation import run_episodes


@dataclasses.dataclass
class LatentCodes:
  initial: np.ndarray   # [T*N, latent] encoder outputs z
  final: np.ndarray     # [T*N, latent] adapted codes z'
  classes: np.ndarray   # [T*N] dataset class ids


def collect_latents(model, sampler: EpisodeSampler, num_tasks: int, batch_size: int,
                    seed: int, progress: bool = True) -> LatentCodes:
  """Evaluation-mode codes of ``num_tasks`` tasks of the seeded stream."""
  if not model.latent_space:
    raise ValueError("a MAML model has no latent space to visualise")

  @tf.function
  def adapt(batch, index):
    del index
    out = model.adapt(batch["support"], training=False)
    return dict(initial=out["initial_latents"][:, :, 0], final=out["final_latents"][:, :, 0],
                classes=batch["classes"])

  codes = run_episodes(adapt, sampler, num_tasks, batch_size, seed,
                       each=ProgressBar(num_tasks, "latents", "tasks") if progress else None)
  return LatentCodes(*(codes[k].reshape(-1, *codes[k].shape[2:])
                       for k in ("initial", "final", "classes")))


def embed_tsne(codes: LatentCodes, perplexity: float = 30.0, seed: int = 0,
               verbose: int = 1, max_iter: int = 1000) -> np.ndarray:
  """2-D t-SNE of [initial; final] codes jointly: [2 * T*N, 2]."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  points = np.concatenate([codes.initial, codes.final]).astype(np.float64)
  perplexity = min(perplexity, (points.shape[0] - 1) / 3.0)  # sklearn needs < n
  tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
              verbose=verbose, max_iter=max_iter)
  return tsne.fit_transform(points)


def _display_name(cls: int, class_names) -> str:
  """The class name, or code points when matplotlib's default font lacks the glyphs."""
  if class_names is None:
    return f"class {cls}"
  name = str(class_names[cls])
  if name.isascii():
    return name
  return f"class {cls} (" + " ".join(f"U+{ord(ch):04X}" for ch in name) + ")"


def plot_latent_tsne(points: np.ndarray, codes: LatentCodes, path: str, seed: int = 0,
                     class_names=None) -> str:
  """Four panels like the paper's Figure 2 (``seed`` picks the two highlighted classes)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  n = codes.initial.shape[0]
  stage = np.repeat([0, 1], n)                   # 0 = encoder output, 1 = adapted
  classes = np.concatenate([codes.classes, codes.classes])
  unique = np.unique(codes.classes)
  highlight = np.random.default_rng(seed).choice(unique, size=min(2, unique.size),
                                                 replace=False)
  size = max(1.0, min(12.0, 6000.0 / points.shape[0]))
  rows = -(-(2 + len(highlight)) // 2)
  fig, grid = plt.subplots(rows, 2, figsize=(10, 5 * rows), squeeze=False)
  axes = grid.ravel()
  for ax in axes[2 + len(highlight):]:
    ax.axis("off")
  axes = axes[:2 + len(highlight)]
  colours = np.array(["tab:blue", "tab:orange"])
  axes[0].scatter(points[:, 0], points[:, 1], c=colours[stage], s=size, linewidths=0)
  axes[0].set_title("(a) by stage: encoder z (blue), adapted z' (orange)", fontsize=9)
  # Class ids are arbitrary integers: a shuffled cyclic map keeps neighbours distinct.
  order = np.random.default_rng(seed).permutation(int(classes.max()) + 1)
  axes[1].scatter(points[:, 0], points[:, 1], c=order[classes] % 20, cmap="tab20",
                  s=size, linewidths=0)
  axes[1].set_title("(b) by class", fontsize=9)
  for ax, cls, letter in zip(axes[2:], highlight, "cdefgh"):
    ax.scatter(points[:, 0], points[:, 1], c="lightgrey", s=size, linewidths=0)
    for st, marker in ((0, "o"), (1, "^")):
      sel = (classes == cls) & (stage == st)
      ax.scatter(points[sel, 0], points[sel, 1], c=colours[st], s=4 * size + 8,
                 marker=marker, label="z (encoder)" if st == 0 else "z' (adapted)")
    ax.set_title(f"({letter}) {_display_name(cls, class_names)}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"{n} LEO class codes before and after latent adaptation (joint t-SNE)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
