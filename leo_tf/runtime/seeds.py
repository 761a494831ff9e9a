"""Process-wide random state: the seeds Keras initialisers draw from, op determinism."""

import keras
import tensorflow as tf


def seed_everything(seed: int) -> None:
  """Seeds Python's, NumPy's, TF's and Keras's generators.

  Keras draws unseeded initializers from Python's RNG: without this, two runs with the
  same seed start from different weights.
  """
  keras.utils.set_random_seed(seed)


def deterministic_ops() -> None:
  """Process-wide tf.config.experimental.enable_op_determinism(): needed for
  bit-identical runs on GPU; on CPU our ops are deterministic already."""
  tf.config.experimental.enable_op_determinism()
