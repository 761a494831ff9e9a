"""Flags and error handling shared by the leo-* entry points (the only place with flags)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from absl import flags  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def define_gin_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), later ones override.")
  flags.DEFINE_multi_string("gin_bindings", [],
                            "Gin bindings, e.g. --gin_bindings='TrainConfig.num_steps=10'.")


def fail(message: str, code: int = 2):
  """Prints a one-line error (no traceback) and exits."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


# Errors that are the user's input, not our bugs: shown without a traceback.
def user_errors():
  from leo_tf.data.embeddings import EmbeddingDataError
  from leo_tf.gin_config import GinConfigError
  from leo_tf.leo.config import ConfigError
  from leo_tf.leo.trainer import TrainingDivergedError
  return (EmbeddingDataError, GinConfigError, ConfigError, TrainingDivergedError,
          FileNotFoundError)
