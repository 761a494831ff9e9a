"""The served computation: check a request, group its support set by label, adapt, classify.

Everything here runs inside the exported graph. A request is one task of any N-way shape
with K_n shots of class n: support embeddings [sum K_n, d] with labels in any order, and
queries [M, d]. N is the largest label + 1; every class 0..N-1 needs a support example.
Adaptation is the model's own evaluation mode (means, no dropout): ``LEO.adapt`` on the
task padded to [1, N, max K_n, d] with its support mask (each class averaged over and its
steps scaled by its own K_n). ``adapt`` and ``classify`` split the computation: the
adapted classifier (weights [N, d], bias [N]) goes back to the client between them.

Bad requests fail with ``tf.debugging.Assert`` messages that say what is wrong; each
stage of checks gates the next through control dependencies, so a later op (e.g.
bincount of a negative label) never fails first with a less helpful message. The first
stage is the request's size against the :class:`ServingLimits` bound at export: the
relation network is quadratic in N*K, so one unbounded request could take the server's
memory.
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import gin
import tensorflow as tf

from leo_tf.backbone.embed import l2_normalize
from leo_tf.config_checks import check_types, require_at_least

_SUMMARIZE = 64  # label counts shown in an error message


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ServingLimits:
  """The largest request an export serves; larger ones fail with INVALID_ARGUMENT.

  Defaults are sized for a 16 GB server: the largest allowed request of a final-code
  model (640-d, relation network 128-128) takes 0.97 GiB above the loaded model, and
  memory grows with (N*K)^2 (N*K = 2000: 3.8 GiB), so about ten such requests fit at
  once (``tools/bench_serving.py --memory``; docs/serving.md).
  """
  max_classes: int = 100    # N
  max_support: int = 1000   # N*K, the relation network's quadratic term
  max_queries: int = 10000  # M
  max_image_size: int = 512  # height and width of a classify_images image

  def __post_init__(self):
    check_types(self)
    require_at_least(self, 1, "max_queries", "max_image_size")
    require_at_least(self, 2, "max_classes", "max_support")  # a task has at least 2 classes


def _require(condition, *parts):
  """An assert op whose message is ``parts`` (strings and tensors) joined.

  Keep tensors int32: with other dtypes tf.Assert wraps itself in a cond (slower).
  """
  return tf.debugging.Assert(condition, list(parts), summarize=_SUMMARIZE)


def _gate(asserts, *tensors):
  """``tensors`` that may only be computed after ``asserts`` passed."""
  with tf.control_dependencies(asserts):
    out = tuple(tf.identity(t) for t in tensors)
  return out if len(out) > 1 else out[0]


def check_features(x: tf.Tensor, dim: int, name: str) -> tf.Tensor:
  """``x`` [rows, dim] with a static feature size, after checking it at run time."""
  ok = _require(tf.equal(tf.shape(x)[1], dim),
                f"{name} must have {dim} features per example (the embedding size the "
                "model was meta-trained on); got", tf.shape(x)[1])
  x = tf.ensure_shape(_gate([ok], x), [None, dim])
  # NaN/Inf inputs would come back as NaN probabilities: refuse them instead.
  finite = _require(tf.reduce_all(tf.math.is_finite(x)),
                    f"{name} contains NaN or Inf values")
  return _gate([finite], x)


# The trailing dimensions of a request's support and query tensors, by kind.
_TRAILING = dict(embeddings="d", images="height, width, channels")


def _rank(x: tf.Tensor) -> tf.Tensor:
  """``x``'s rank, read at run time. A restored signature feeds tensors of any shape into
  its graph, and TensorFlow's graph optimisers replace ``Rank`` (and ``Size`` of
  ``Shape``) with the signature's static rank; the position of a 1 appended to the
  shape's entries, each made 0, is not known before the graph runs."""
  zeros = tf.minimum(tf.shape(x), 0)
  return tf.argmax(tf.concat([zeros, [1]], axis=0), output_type=tf.int32)


def _check_ranks(*inputs):
  """The tensors of ``inputs``, (tensor, name, shape text, rank) each, once each has its
  rank (a wrong one would fail in some slice with an index error that names none)."""
  checks = [_require(tf.equal(_rank(x), r), f"{name} must be a tensor of shape {shape}; got "
                     "one of rank", _rank(x)) for x, name, shape, r in inputs]
  return _gate(checks, *[x for x, *_ in inputs])


def check_ranks(support, labels, query, what: str = "embeddings"):
  """``support``, ``labels``, ``query`` once each has its rank."""
  trailing = _TRAILING[what]
  rank = 2 + trailing.count(",")
  return _check_ranks((support, f"support_{what}", f"[N*K, {trailing}]", rank),
                      (labels, "support_labels", "[N*K]", 1),
                      (query, f"query_{what}", f"[M, {trailing}]", rank))


def _support_limit(support, labels, limits: ServingLimits, what: str):
  """The checks of the support rows and labels against ServingLimits.max_support."""
  serves = (f"this export serves at most N*K = {limits.max_support} support examples "
            "(ServingLimits.max_support)")
  size, rows = tf.shape(labels)[0], tf.shape(support)[0]
  return [_require(size <= limits.max_support, "support_labels has", size, "entries; " + serves),
          _require(rows <= limits.max_support, f"support_{what} has", rows, "rows; " + serves)]


def _query_limit(query, limits: ServingLimits, what: str):
  """The check of the query rows against ServingLimits.max_queries."""
  queries = tf.shape(query)[0]
  return _require(queries <= limits.max_queries, f"query_{what} has", queries, "rows; this "
                  f"export serves at most M = {limits.max_queries} queries "
                  "(ServingLimits.max_queries)")


def check_sizes(support, labels, query, limits: ServingLimits, what: str = "embeddings"):
  """``support``, ``labels``, ``query`` once their ranks are right and their row counts
  (and image sizes) are within ``limits``: checked before any work that grows with them
  (the backbone, the relation network)."""
  support, labels, query = check_ranks(support, labels, query, what)
  checks = _support_limit(support, labels, limits, what) + [_query_limit(query, limits, what)]
  if what == "images":
    side = limits.max_image_size
    checks += [_require(tf.reduce_all(tf.shape(x)[1:3] <= side), f"{name} are", tf.shape(x)[1],
                        "x", tf.shape(x)[2], f"pixels; this export serves images of at most "
                        f"{side} x {side} (ServingLimits.max_image_size)")
               for x, name in ((support, "support_images"), (query, "query_images"))]
  return _gate(checks, support, labels, query)


def group_support(embeddings: tf.Tensor, labels: tf.Tensor, dim: int,
                  num_classes: Optional[int], limits: ServingLimits):
  """Support rows [N*K, d] with int64 labels in any order -> the task [1, N, K, d] (K the
  most shots of a class; a class's rows in request order, zeros after its last) and its
  support mask [1, N, K] (1 for a real example).

  ``num_classes`` fixes N (MAML has a per-class learned initialisation); ``limits``
  bound N and the padded task's N * max K_n (the inner loops run on the padded grid: one
  class of 900 shots among 99 of one would otherwise pad to 90,000 rows). Labels are
  range-checked as int64 (2**32 + 4 is not class 4), then cast.
  """
  embeddings = check_features(embeddings, dim, "support_embeddings")
  labels = tf.cast(labels, tf.int64)
  size = tf.shape(labels)[0]
  stage1 = [
      _require(tf.equal(size, tf.shape(embeddings)[0]),
               "support_labels must have one label per row of support_embeddings; got",
               size, "labels for", tf.shape(embeddings)[0], "rows"),
      _require(size > 0, "the support set is empty: send at least one labelled "
               "example of every class"),
  ]
  labels = _gate(stage1, labels)
  top = tf.reduce_max(labels)
  text = tf.strings.as_string  # int64 values in messages without Assert's slower cond
  stage2 = [
      _require(tf.reduce_all(labels >= 0),
               "support_labels must be class indices 0..N-1; got negative labels:",
               text(tf.boolean_mask(labels, labels < 0))),
      # Cheap guard before bincount: more classes than examples means missing classes.
      _require(top < tf.cast(size, tf.int64), "support_labels must be 0..N-1 (N = largest "
               "label + 1) with every class present, but the largest label is", text(top),
               "and there are only", size, "support examples"),
      _require(top < limits.max_classes, "this export serves at most N = "
               f"{limits.max_classes} classes (ServingLimits.max_classes); the largest support "
               "label is", text(top)),
  ]
  if num_classes is not None:
    stage2.append(_require(tf.equal(top + 1, num_classes),
                           f"this model serves {num_classes}-way tasks only (labels "
                           f"0..{num_classes - 1}); the largest support label is", text(top)))
  # In range now, so int32 (what bincount and the asserts' messages want) is exact.
  labels = tf.cast(_gate(stage2, labels), tf.int32)
  n = tf.cast(top, tf.int32) + 1
  counts = tf.math.bincount(labels, minlength=n, dtype=tf.int32)
  stage3 = [
      _require(n >= 2, "a task needs at least 2 classes; every support label is 0"),
      _require(tf.reduce_all(counts > 0),
               "every class 0..N-1 (N = largest support label + 1) needs a support "
               "example; classes without one:",
               tf.cast(tf.where(tf.equal(counts, 0))[:, 0], tf.int32)),
  ]
  counts = _gate(stage3, counts)
  padded = n * tf.reduce_max(counts)
  fits = _require(padded <= limits.max_support, "the support set padded to its largest class "
                  "has N x max K_n =", padded, "examples; this export serves at most "
                  f"{limits.max_support} (ServingLimits.max_support): send fewer shots of the "
                  "largest classes")
  counts, labels, embeddings = _gate([fits], counts, labels, embeddings)
  # Row i of class c goes to [c, i's position among c's rows].
  order = tf.argsort(labels, stable=True)
  grouped = tf.gather(labels, order)
  position = tf.range(size) - tf.gather(tf.cumsum(counts, exclusive=True), grouped)
  index = tf.stack([grouped, position], axis=1)
  shape = tf.stack([n, tf.reduce_max(counts)])
  task = tf.scatter_nd(index, tf.gather(embeddings, order), tf.concat([shape, [dim]], 0))
  mask = tf.scatter_nd(index, tf.ones([size]), shape)
  return task[None], mask[None]


def _refuse_overflow(values, inputs, what: str):
  """``values`` once all are finite; else the request's inputs (``inputs``: finite, far
  beyond the training data's scale, e.g. 1e20 in an export that does not L2-normalise)
  overflowed float32 inside: refused, not answered with NaN."""
  largest = tf.reduce_max(tf.abs(tf.concat([tf.reshape(x, [-1]) for x in inputs], axis=0)))
  finite = _require(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values]),
                    f"the {what} of this request (largest |value|",
                    tf.strings.as_string(largest, scientific=True, precision=2),
                    ") overflow the float32 computation of this model: send embeddings on "
                    "the scale of the ones it was trained on")
  return _gate([finite], *values)


def adapt(model, support: tf.Tensor, mask: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Evaluation-mode adaptation on support [1, N, K, d] with its mask [1, N, K] ->
  the classifier: weights [N, d] and bias [N] (zeros for a model without one)."""
  adapted = model.adapt(support, training=False, support_mask=mask)
  weights = adapted["weights"][0]
  bias = (tf.zeros(tf.shape(weights)[:1]) if adapted["bias"] is None
          else adapted["bias"][0])
  return _refuse_overflow((weights, bias), (support,), "embeddings")


def classify_adapted(model, weights, bias, query, inputs, what: str = "embeddings"
                     ) -> Dict[str, tf.Tensor]:
  """The classifier (weights [N, d], bias [N]) on query [M, d] -> probabilities [M, N]
  and labels [M]; ``inputs`` and ``what`` name the request's values in an overflow."""
  logits = model.logits(query[None, None], weights[None], bias=bias[None])[0, 0]
  logits = _refuse_overflow((logits,), inputs, what)
  return dict(probabilities=tf.nn.softmax(logits),
              labels=tf.argmax(logits, axis=-1, output_type=tf.int64))


def classify(model, support: tf.Tensor, mask: tf.Tensor, query: tf.Tensor
             ) -> Dict[str, tf.Tensor]:
  """Adaptation on support [1, N, K, d] (mask [1, N, K]) and classification of query
  [M, d] in one call."""
  weights, bias = adapt(model, support, mask)
  return classify_adapted(model, weights, bias, query, (support, query))


def _grouped(model, normalize: bool, limits: ServingLimits, support, labels):
  """The request's support set as the task [1, N, K, d] and its mask [1, N, K]."""
  if normalize:
    support = l2_normalize(support)
  num_classes = None if model.latent_space else model.config.num_classes
  return group_support(support, labels, model.dim, num_classes, limits)


def _classify_embeddings(model, normalize: bool, limits: ServingLimits, support, labels,
                         query) -> Dict[str, tf.Tensor]:
  """The served computation on embeddings whose sizes were checked."""
  query = check_features(query, model.dim, "query_embeddings")
  if normalize:
    query = l2_normalize(query)
  return classify(model, *_grouped(model, normalize, limits, support, labels), query)


def embedding_endpoint(model, normalize: bool,
                       limits: ServingLimits = ServingLimits()) -> Callable:
  """The ``serving_default`` function on embeddings."""
  def serve(support_embeddings, support_labels, query_embeddings):
    return _classify_embeddings(model, normalize, limits, *check_sizes(
        support_embeddings, support_labels, query_embeddings, limits))

  return serve


def adapt_endpoint(model, normalize: bool, limits: ServingLimits = ServingLimits()
                   ) -> Callable:
  """The ``adapt`` function: a support set -> the adapted classifier, weights [N, d] and
  bias [N], for the ``classify`` function (a client adapts once, classifies often)."""
  def serve_adapt(support_embeddings, support_labels):
    support, labels = _check_ranks(
        (support_embeddings, "support_embeddings", "[N*K, d]", 2),
        (support_labels, "support_labels", "[N*K]", 1))
    support, labels = _gate(_support_limit(support, labels, limits, "embeddings"),
                            support, labels)
    task, mask = _grouped(model, normalize, limits, support, labels)
    weights, bias = adapt(model, task, mask)
    return dict(weights=weights, bias=bias)

  return serve_adapt


def classify_endpoint(model, normalize: bool, limits: ServingLimits = ServingLimits()
                      ) -> Callable:
  """The ``classify`` function: an adapted classifier (``adapt``'s outputs) and queries
  [M, d] -> probabilities [M, N] and labels [M], as ``serving_default`` answers."""
  def serve_classify(weights, bias, query_embeddings):
    weights, bias, query = _check_ranks((weights, "weights", "[N, d]", 2),
                                        (bias, "bias", "[N]", 1),
                                        (query_embeddings, "query_embeddings", "[M, d]", 2))
    n = tf.shape(weights)[0]
    sizes = [
        _require(n <= limits.max_classes, "weights has", n, "rows; this export serves at "
                 f"most N = {limits.max_classes} classes (ServingLimits.max_classes)"),
        _require(n >= 2, "weights must have a row for each of at least 2 classes; got", n),
        _require(tf.equal(tf.shape(bias)[0], n), "bias must have one entry per row of "
                 "weights; got", tf.shape(bias)[0], "for", n, "rows"),
        _query_limit(query, limits, "embeddings")]
    weights, bias, query = _gate(sizes, weights, bias, query)
    weights = check_features(weights, model.dim, "weights")
    query = check_features(query, model.dim, "query_embeddings")
    bias = _gate([_require(tf.reduce_all(tf.math.is_finite(bias)),
                           "bias contains NaN or Inf values")], bias)
    if normalize:
      query = l2_normalize(query)
    return classify_adapted(model, weights, bias, query, (weights, bias, query),
                            "classifier and query embeddings")

  return serve_classify


def image_endpoint(model, backbone, preprocess: Callable, normalize: bool,
                   limits: ServingLimits = ServingLimits()) -> Callable:
  """The same on raw images: one backbone pass over support and query images together."""
  def serve_images(support_images, support_labels, query_images):
    support_images, support_labels, query_images = check_sizes(
        support_images, support_labels, query_images, limits, "images")
    same = _require(tf.reduce_all(tf.equal(tf.shape(support_images)[1:],
                                           tf.shape(query_images)[1:])),
                    "support_images and query_images must have the same height, width "
                    "and channels; got", tf.shape(support_images)[1:], "and",
                    tf.shape(query_images)[1:])
    support_images, query_images = _gate([same], support_images, query_images)
    count = tf.shape(support_images)[0]
    images = preprocess(tf.concat([support_images, query_images], axis=0))
    features = backbone(images, training=False)
    return _classify_embeddings(model, normalize, limits, features[:count], support_labels,
                                features[count:])

  return serve_images
