"""tools/leo_bench's FLOP counts, by hand: the GPU plan of docs/distributed.md rests on
them (a convolution's forward pass and its two gradients; the kept activations)."""

import os
import sys

import keras
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tools"))
from leo_bench import backbone, flops  # noqa: E402  (tool modules, not the package)


def test_convolution_and_its_gradients_each_count_one_window_sum_per_output():
  # 3x3 kernel, 4 -> 6 channels, stride 2 on 2 images of 10x10: outputs [2, 5, 5, 6].
  conv = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False)
  conv.build((None, 10, 10, 4))
  x = tf.TensorSpec([2, 10, 10, 4])

  def forward_backward(images):
    with tf.GradientTape() as tape:
      tape.watch(images)
      loss = tf.reduce_sum(conv(images))
    return tape.gradient(loss, [images, conv.kernel])

  graph = tf.function(forward_backward).get_concrete_function(x).graph
  counted = {op.type: flops.op_flops(op) for op in flops.graph_ops(graph)
             if op.type in flops.CONVOLUTIONS}
  window = 2 * 3 * 3 * 4            # multiply-adds of one output value
  outputs = 2 * 5 * 5 * 6
  assert counted == dict(Conv2D=window * outputs, Conv2DBackpropInput=window * outputs,
                         Conv2DBackpropFilter=window * outputs)


def test_kept_activations_of_a_tiny_wrn():
  # WRN-10-1 on 8x8 images, strides (1, 2, 2): widths 16/32/64 at 8x8, 4x4, 2x2.
  model = backbone.build((10, 1, 8, (1, 2, 2)))
  a = backbone.activations(model)
  # Kept: the image (the stem's input); per block its input (BN1's) and ReLU1's output at
  # the input's size, conv1's output (BN2's input) and ReLU2's output at the output's;
  # then the final BN's input and ReLU's output.
  block = lambda before, after: 2 * before + 2 * after
  kept = (8 * 8 * 3 + block(8 * 8 * 16, 8 * 8 * 16) + block(8 * 8 * 16, 4 * 4 * 32)
          + block(4 * 4 * 32, 2 * 2 * 64) + 2 * 2 * 2 * 64)
  assert a["kept"] == kept == 9408
