"""Shared fixtures: synthetic embedding sets with known class structure."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from leo_tf.data.embeddings import EmbeddingSet


def synthetic_embeddings(num_classes: int, per_class: int, dim: int = 64,
                         signal_dim: int = 4, noise: float = 0.3, seed: int = 0,
                         prefix: str = "c", basis_seed: int = 0) -> EmbeddingSet:
  """Classes whose means differ only inside a random ``signal_dim`` subspace.

  Every dimension carries isotropic noise, so in the raw space the class signal is
  buried, while a learned projection onto the subspace separates the classes.
  """
  # The subspace is shared by all splits made with one basis_seed; classes are not.
  basis = np.linalg.qr(np.random.default_rng(basis_seed).normal(size=(dim, dim)))[0]
  basis = basis[:, :signal_dim]
  rng = np.random.default_rng(seed + 1000)
  centers = rng.normal(size=(num_classes, signal_dim))
  ids = np.repeat(np.arange(num_classes), per_class)
  x = centers[ids] @ basis.T + rng.normal(size=(ids.size, dim)) * noise
  keys = np.array([f"{i}-{prefix}{c}-img{i}.JPEG" for i, c in enumerate(ids)])
  names = sorted({f"{prefix}{c}" for c in range(num_classes)})
  index = {n: i for i, n in enumerate(names)}
  class_ids = np.array([index[f"{prefix}{c}"] for c in ids], np.int32)
  return EmbeddingSet(x.astype(np.float32), class_ids, names, keys).l2_normalized()


@pytest.fixture
def small_set():
  return synthetic_embeddings(12, 20, dim=16, seed=1)
