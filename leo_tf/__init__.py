"""LEO (Latent Embedding Optimization, Rusu et al.) few-shot classification on
TensorFlow 2 / Keras 3.

The names below are what using LEO from Python needs (the README has an example on
numpy arrays). They are imported on first use, so ``import leo_tf``, and every console
script's start, does not load TensorFlow.
"""

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "LEOConfig": "leo_tf.leo.config",
    "ConfigError": "leo_tf.leo.config",
    "LEO": "leo_tf.leo.model",
    "TrainConfig": "leo_tf.leo.config",
    "MetaTrainer": "leo_tf.leo.trainer",
    "load_model": "leo_tf.leo.weights",
    "EmbeddingSet": "leo_tf.data.embeddings",
    "EmbeddingDataError": "leo_tf.data.embeddings",
    "load_embeddings": "leo_tf.data.embeddings",
    "save_embeddings": "leo_tf.data.embeddings",
    "EmbeddingSource": "leo_tf.data.source",
    "EpisodeSampler": "leo_tf.data.episodes",
    "EvalConfig": "leo_tf.leo.evaluation",
    "EvalResult": "leo_tf.leo.evaluation",
    "evaluate": "leo_tf.leo.evaluation",
    "run_experiment": "leo_tf.leo.experiment",
    "open_run": "leo_tf.leo.run",
    "FewShotClassifier": "leo_tf.serving.classifier",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'leo_tf' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
