"""Few-shot evaluation: mean accuracy over many episodes with a 95% confidence interval."""

import dataclasses
import math
import time
from typing import Callable, Optional

import gin
import numpy as np
import tensorflow as tf

from leo_tf.data.episodes import EpisodeSampler


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Test protocol. ``num_queries=None``: every non-shot example of a class is a query."""
  num_episodes: int = 10000
  num_queries: Optional[int] = None
  batch_size: int = 20
  seed: int = 20260
  split: str = "test"


@dataclasses.dataclass
class EvalResult:
  accuracies: np.ndarray  # one per episode

  @property
  def mean(self) -> float:
    return float(np.mean(self.accuracies))

  @property
  def ci95(self) -> float:
    """Half-width of the normal-approximation 95% interval of the mean."""
    n = self.accuracies.size
    if n < 2:
      return float("nan")
    return float(1.96 * np.std(self.accuracies, ddof=1) / math.sqrt(n))

  def __str__(self):
    return f"{100 * self.mean:.2f} +- {100 * self.ci95:.2f} % ({self.accuracies.size} episodes)"


def episode_accuracies(predict: Callable, sampler: EpisodeSampler, num_episodes: int,
                       batch_size: int, seed: int, log: Optional[Callable] = None,
                       label: str = "eval") -> np.ndarray:
  """Runs ``predict(batch) -> per-task accuracy [B]`` over a seeded stream of episodes."""
  batches = math.ceil(num_episodes / batch_size)
  accuracies, start, last_log = [], time.time(), time.time()
  for i, batch in enumerate(sampler.dataset(batch_size, seed, count=batches)):
    accuracies.append(predict(batch).numpy())
    if log and time.time() - last_log > 10:
      done = (i + 1) * batch_size
      log(f"[{label}] {min(done, num_episodes)}/{num_episodes} episodes, "
          f"{done / (time.time() - start):.0f} episodes/s")
      last_log = time.time()
  return np.concatenate(accuracies)[:num_episodes]


def evaluate(model, sampler: EpisodeSampler, num_episodes: int, batch_size: int,
             seed: int, log: Optional[Callable] = None, label: str = "eval") -> EvalResult:
  """Evaluation mode (means, no dropout, zero KL) accuracy of ``model``."""

  @tf.function
  def predict(batch):
    return model(batch, training=False)["accuracy"]

  return EvalResult(episode_accuracies(predict, sampler, num_episodes, batch_size, seed,
                                       log, label))
