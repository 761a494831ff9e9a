"""``leo_tf.FewShotClassifier``: a meta-trained LEO as a scikit-learn style classifier.

``fit`` adapts once to a support set (any number of examples per class, labels of any
hashable type); ``predict`` and ``predict_proba`` only classify. ``fit`` is the export's
``adapt`` (serving/graph.py): run in process for a leo-train run directory, or the
signature of a SavedModel that leo-export wrote, so both give the same answers and check
the same limits. Classifying is the ``classify`` signature's few lines (normalise, one
product with the adapted weights, softmax) in numpy: a signature call costs ~0.5 ms, the
product microseconds (tests pin the two together).
"""

import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from leo_tf.data.embeddings import l2_normalize_rows
from leo_tf.serving import export, graph


class NotFittedError(ValueError, AttributeError):
  """predict or predict_proba before fit (as scikit-learn's NotFittedError)."""


def _class_order(labels):
  """The distinct labels, sorted when they can be, else in order of first appearance."""
  distinct = list(dict.fromkeys(labels))
  try:
    return sorted(distinct)
  except TypeError:  # e.g. strings and numbers mixed
    return distinct


def _as_array(values) -> np.ndarray:
  """A 1-D array of ``values``: numpy's own dtype when they are all of one type, else an
  object array (which keeps tuples, and 1 and '1' apart)."""
  if len({type(v) for v in values}) == 1 and not isinstance(values[0], tuple):
    array = np.asarray(values)
    if array.ndim == 1:
      return array
  out = np.empty(len(values), dtype=object)
  out[:] = values
  return out


class FewShotClassifier:
  """A meta-trained LEO classifying new classes from a few labelled examples.

  ``path`` is a leo-train run directory (its ``which`` checkpoint, 'best' or 'latest')
  or a leo-export version directory. ``backbone`` (a .keras file or leo-pretrain
  directory) lets ``fit`` and ``predict`` take images uint8 [n, H, W, C]; a run whose
  embeddings were built by leo_tf has its backbone found without it (an end-to-end
  run's is the one it meta-trained).
  """

  def __init__(self, path, which: str = "best", backbone: Optional[str] = None):
    self.path = os.fspath(path)
    self._backbone = None
    if os.path.isfile(os.path.join(self.path, "saved_model.pb")):
      self._from_export()
    else:
      backbone = self._from_run(which, backbone)
    if backbone:
      self._backbone = export.load_backbone(backbone)
    if self._backbone is not None:
      from leo_tf.backbone import inputs  # pylint: disable=import-outside-toplevel
      self._preprocess = inputs.preprocess

  def _from_export(self):
    signatures = tf.saved_model.load(self.path).signatures
    self._adapt = signatures[export.ADAPT_SIGNATURE]
    with open(os.path.join(self.path, export.ASSETS_EXTRA, export.METADATA_FILE)) as f:
      info = json.load(f)
    self.n_features_in_, self._normalize = info["dim"], info["l2_normalize"]
    self.limits = graph.ServingLimits(**info["serving_limits"])

  def _from_run(self, which: str, backbone: Optional[str]) -> Optional[str]:
    """Builds adapt from a run; returns the backbone to load: ``backbone``, else the one
    the run's embeddings were built with (an end-to-end run's is loaded here)."""
    # pylint: disable=import-outside-toplevel
    from leo_tf import saved_config
    from leo_tf.backbone import pipeline
    from leo_tf.backbone.pretrain import BACKBONE_FILE
    from leo_tf.leo.run import open_run
    run = open_run(self.path, which, log=lambda _: None)
    self.n_features_in_, self._normalize = run.dim, run.configs.source.l2_normalize
    self.limits = saved_config.read_saved(run.directory, graph.ServingLimits)
    self._adapt = tf.function(graph.adapt_endpoint(run.model, self._normalize, self.limits),
                              input_signature=[tf.TensorSpec([None, run.dim], tf.float32),
                                               tf.TensorSpec([None], tf.int64)])
    if backbone:
      return backbone
    if run.configs.end_to_end.enabled:  # the backbone it meta-trained, not the pre-trained
      self._backbone = run.backbone()
      return None
    source = run.source  # an image folder's embeddings live in their own folder
    found = os.path.join(pipeline.default_model_dir(source.root, source.folder), BACKBONE_FILE)
    return found if source.builder is not None and os.path.isfile(found) else None

  # ------------------------------------------------------------------ inputs

  def _features(self, X, name: str = "X") -> np.ndarray:
    """Embeddings [n, d] of ``X``: embeddings as given, or images through the backbone."""
    X = np.asarray(X)
    if X.ndim == 4 and self._backbone is not None:
      X = np.concatenate([self._backbone(self._preprocess(tf.constant(X[i:i + 256])),
                                         training=False).numpy()
                          for i in range(0, len(X), 256)] or
                         [np.zeros((0, self.n_features_in_), np.float32)])
    elif X.ndim != 2:
      images = " (or images [n, H, W, C]: this classifier has no backbone)" * (X.ndim == 4)
      raise ValueError(f"{name} must be a 2-D array of embeddings [n, d]{images}; got one "
                       f"of shape {X.shape}")
    if X.shape[1] != self.n_features_in_:
      raise ValueError(f"{name} has {X.shape[1]} features per example, but this model was "
                       f"meta-trained on {self.n_features_in_}-d embeddings")
    return X.astype(np.float32)

  # ------------------------------------------------------------------ scikit-learn API

  def fit(self, X, y) -> "FewShotClassifier":
    """Adapts to the support set ``X`` (embeddings [n, d] or images) with labels ``y``;
    replaces any earlier support set. Returns self."""
    labels = list(y)
    X = self._features(X)
    if len(labels) != len(X):
      raise ValueError(f"y has {len(labels)} labels for {len(X)} examples in X")
    classes = _class_order(labels)
    if len(classes) < 2:
      raise ValueError("fit needs examples of at least 2 classes; y has "
                       f"{'none' if not classes else 'only ' + repr(classes[0])}")
    if len(X) > self.limits.max_support:
      raise ValueError(f"fit takes at most {self.limits.max_support} examples "
                       f"(ServingLimits.max_support); got {len(X)}")
    index = {label: i for i, label in enumerate(classes)}
    adapted = self._adapt(support_embeddings=tf.constant(X), support_labels=tf.constant(
        [index[label] for label in labels], tf.int64))
    self.classes_ = _as_array(classes)
    self.weights_, self.bias_ = adapted["weights"].numpy(), adapted["bias"].numpy()
    return self

  def predict_proba(self, X) -> np.ndarray:
    """Probabilities [n, len(classes_)] of ``X``, columns in ``classes_`` order."""
    if not hasattr(self, "weights_"):
      raise NotFittedError("this FewShotClassifier is not fitted yet: call fit(X, y) with "
                           "a support set first")
    X = self._features(X)
    if not np.isfinite(X).all():
      raise ValueError("X contains NaN or Inf values")
    if self._normalize:
      X = l2_normalize_rows(X)
    with np.errstate(over="ignore", invalid="ignore"):
      logits = X @ self.weights_.T + self.bias_
    if not np.isfinite(logits).all():  # as the classify signature refuses it
      raise ValueError(f"X (largest |value| {np.abs(X).max():.2e}) overflows the float32 "
                       "computation of this model: give embeddings on the scale of the ones "
                       "it was trained on")
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)

  def predict(self, X) -> np.ndarray:
    """The most probable class of each row of ``X``, from ``classes_``."""
    probabilities = self.predict_proba(X)  # first: it checks that fit was called
    return self.classes_[probabilities.argmax(axis=1)]
