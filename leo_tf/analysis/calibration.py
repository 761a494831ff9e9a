"""Calibration of query predictions: ECE, NLL and reliability diagrams.

Statistics are accumulated over batches of episodes (per-bin counts and sums), so
10,000 test episodes with hundreds of queries each never have to sit in memory.
ECE uses equal-width bins over the confidence (the top-class probability):
ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|, over all query
predictions pooled (Guo et al., 2017). NLL is the mean over queries of -log p(true).
"""

import dataclasses
from typing import Dict, Optional

import numpy as np

DEFAULT_NUM_BINS = 15
_MIN_PROB = 1e-12  # -log(0) guard; a probability this small costs 27.6 nats


def bin_index(confidence: np.ndarray, num_bins: int) -> np.ndarray:
  """Bin b covers (b/M, (b+1)/M]; confidence 0 goes into bin 0."""
  return np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)


@dataclasses.dataclass
class CalibrationStats:
  """Running sums over query predictions of one method."""
  num_bins: int = DEFAULT_NUM_BINS
  counts: Optional[np.ndarray] = None
  confidence_sums: Optional[np.ndarray] = None
  correct_sums: Optional[np.ndarray] = None
  nll_sum: float = 0.0

  def __post_init__(self):
    zeros = lambda: np.zeros(self.num_bins, np.float64)
    self.counts = zeros() if self.counts is None else self.counts
    self.confidence_sums = zeros() if self.confidence_sums is None else self.confidence_sums
    self.correct_sums = zeros() if self.correct_sums is None else self.correct_sums

  def update(self, probs: np.ndarray, labels: np.ndarray,
             mask: Optional[np.ndarray] = None) -> "CalibrationStats":
    """Adds probs [..., C], integer labels [...], mask [...] (1 = a real query); returns self."""
    probs = np.asarray(probs, np.float64).reshape(-1, np.shape(probs)[-1])
    labels = np.asarray(labels).reshape(-1)
    keep = (np.ones(labels.shape, bool) if mask is None
            else np.asarray(mask).reshape(-1) > 0)
    probs, labels = probs[keep], labels[keep]
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = bin_index(confidence, self.num_bins)
    self.counts += np.bincount(bins, minlength=self.num_bins)
    self.confidence_sums += np.bincount(bins, confidence, minlength=self.num_bins)
    self.correct_sums += np.bincount(bins, correct, minlength=self.num_bins)
    true_prob = probs[np.arange(labels.size), labels]
    self.nll_sum += float(-np.log(np.maximum(true_prob, _MIN_PROB)).sum())
    return self

  @property
  def total(self) -> float:
    return float(self.counts.sum())

  @property
  def ece(self) -> float:
    if self.total == 0:
      return float("nan")
    gap = np.abs(self.correct_sums - self.confidence_sums)  # = |B| * |acc - conf|
    return float(gap.sum() / self.total)

  @property
  def nll(self) -> float:
    return self.nll_sum / self.total if self.total else float("nan")

  def bin_means(self):
    """Accuracy and mean confidence per bin (NaN in empty bins)."""
    with np.errstate(invalid="ignore", divide="ignore"):
      return self.correct_sums / self.counts, self.confidence_sums / self.counts


def expected_calibration_error(probs, labels, mask=None,
                               num_bins: int = DEFAULT_NUM_BINS) -> float:
  return CalibrationStats(num_bins).update(probs, labels, mask).ece


def negative_log_likelihood(probs, labels, mask=None) -> float:
  return CalibrationStats(1).update(probs, labels, mask).nll


def episode_labels(probs_shape) -> np.ndarray:
  """Labels [B, N, Q] of episode predictions [B, N, Q, N]: class n is label n."""
  b, n, q = probs_shape[:3]
  return np.broadcast_to(np.arange(n)[None, :, None], (b, n, q))


def reliability_diagram(stats: Dict[str, CalibrationStats], path: str,
                        title: str = "Reliability of query predictions") -> str:
  """One panel per method: accuracy per confidence bin against the diagonal."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(stats)
  cols = min(4, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
  for ax, name in zip(axes.ravel(), names):
    s = stats[name]
    edges = np.linspace(0.0, 1.0, s.num_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / s.num_bins
    filled = s.counts > 0
    acc, conf = (m[filled] for m in s.bin_means())
    ax.bar(centers[filled], acc, width=width, edgecolor="black", color="tab:blue",
           label="accuracy")
    # The gap to each bin's mean confidence is what ECE weighs (either direction).
    ax.bar(centers[filled], np.abs(conf - acc), bottom=np.minimum(acc, conf), width=width,
           color="tab:red", alpha=0.35, edgecolor="tab:red", hatch="//",
           label="gap to mean confidence", zorder=3)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}\nECE {100 * s.ece:.2f}%  NLL {s.nll:.3f}", fontsize=9)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
  for ax in axes.ravel()[len(names):]:
    ax.axis("off")
  axes.ravel()[0].legend(loc="upper left", fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
