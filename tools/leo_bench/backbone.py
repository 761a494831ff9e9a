"""What a Wide ResNet costs inside an end-to-end LEO step: FLOPs of one image's forward
pass and of its forward + backward pass (counted from the traced graphs, convolutions
included), the activations the backward pass keeps, and the measured seconds of a
forward + backward pass per image on this machine.

The end-to-end step runs the backbone with frozen batch-norm statistics (inference-mode
batch norm, trainable scale and offset) and differentiates the query loss with respect
to the backbone's weights, so the pass measured here is ``model(x, training=False)``
under one GradientTape over the trainable variables.
"""

import resource
import time

from leo_bench.flops import graph_flops

# The backbones of the plan: (depth, width, image side, group strides).
WRN_10_2_32 = (10, 2, 32, (2, 2, 2))      # the typeface benchmark's backbone
WRN_28_10_80 = (28, 10, 80, (2, 2, 2))    # the LEO paper's (gin/backbone/wrn_28_10.gin)


def build(spec, policy: str = "float32"):
  """The WRN of ``spec`` (depth, width, side, strides) on RGB images, in ``policy``."""
  from leo_tf.backbone import precision, wrn
  depth, width, side, strides = spec
  with precision.policy(policy):
    return wrn.build_wrn(depth, width, input_shape=(side, side, 3), group_strides=strides)


def train_pass(model):
  """forward + backward of a batch: the gradient of the embeddings' sum with respect to
  every trainable variable, batch norm in inference mode (frozen statistics)."""
  import tensorflow as tf

  @tf.function
  def step(images):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.cast(model(images, training=False), tf.float32))
    return tape.gradient(loss, model.trainable_variables)

  return step


def _elements(tensor) -> int:
  total = 1
  for d in tensor.shape[1:]:
    total *= int(d)
  return total


def activations(model) -> dict:
  """Elements per image of every layer output (an upper bound on what a pass holds) and
  of those the backward pass keeps: the inputs of convolutions and of batch norms (the
  scale's gradient reads them) and the outputs of ReLUs, each tensor counted once."""
  from keras import layers
  kept = {}
  for layer in model.layers:
    if isinstance(layer, (layers.Conv2D, layers.BatchNormalization)):
      kept[id(layer.input)] = _elements(layer.input)
    elif isinstance(layer, layers.ReLU):
      kept[id(layer.output)] = _elements(layer.output)
  outputs = sum(_elements(layer.output) for layer in model.layers[1:])
  return dict(all_outputs=outputs, kept=sum(kept.values()))


def costs(spec) -> dict:
  """FLOPs per image (forward; forward + backward), parameters and activation elements
  per image of the WRN of ``spec``, counted at batch 1 from the traced graphs."""
  import tensorflow as tf
  from leo_tf.backbone import wrn
  model = build(spec)
  side = spec[2]
  image = tf.TensorSpec([1, side, side, 3])
  forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(image)
  backward = train_pass(model).get_concrete_function(image)
  return dict(params=wrn.count_params(model), forward_flops=graph_flops(forward.graph),
              train_flops=graph_flops(backward.graph), **activations(model))


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(spec, batch: int, batches: int) -> dict:
  """Seconds per image of forward + backward on this machine (each of ``batches``
  batches of ``batch`` images, after one untimed batch), and the growth of peak RSS from
  a batch of 1 to a batch of ``batch`` (what the activations took, roughly)."""
  import numpy as np
  import tensorflow as tf
  model = build(spec)
  step = train_pass(model)
  side = spec[2]
  one = tf.constant(np.random.default_rng(0).normal(size=(1, side, side, 3)), tf.float32)
  step(one)
  rss_one = _peak_rss_mb()
  images = tf.tile(one, [batch, 1, 1, 1])
  step(images)[0].numpy()
  seconds = []
  for _ in range(batches):
    start = time.perf_counter()
    step(images)[0].numpy()
    seconds.append((time.perf_counter() - start) / batch)
  return dict(seconds_per_image=seconds, batch=batch,
              rss_growth_mb=_peak_rss_mb() - rss_one)
