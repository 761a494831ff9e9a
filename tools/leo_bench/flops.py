"""Multiply-add FLOPs of a traced graph: every MatMul / BatchMatMul / Einsum counts
2 * the product of its contracted and free dimensions, every 2-D convolution (forward,
and its two backward ops) 2 * its output elements * kernel height * width * input
channels; other ops count nothing."""

# A convolution and its gradients: which input holds the [batch, H, W, C] tensor whose
# every element is one window's output (the op's output, or the incoming gradient).
CONVOLUTIONS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


def dims(tensor):
  return [int(d) if d is not None else None for d in tensor.shape.as_list()]


def einsum_flops(equation, shapes):
  """2 * product over every distinct index letter (ellipses given their own letters)."""
  inputs = equation.split("->")[0].split(",")
  sizes = {}
  for spec, shape in zip(inputs, shapes):
    if "..." in spec:
      extra = len(shape) - (len(spec) - 3)
      spec = spec.replace("...", "".join(chr(0x100 + i) for i in range(extra)))
    for letter, size in zip(spec, shape):
      sizes[letter] = size
  total = 2
  for size in sizes.values():
    total *= size
  return total


def conv_flops(op) -> int:
  """Multiply-add FLOPs of a 2-D convolution op (NHWC) or of one of its gradients: each
  element of the convolution's output is a kh x kw x c_in window sum, whichever of the
  three ops computes with it."""
  if op.type == "Conv2DBackpropFilter":
    kernel, outputs = dims(op.outputs[0]), dims(op.inputs[2])
  elif op.type == "Conv2DBackpropInput":
    kernel, outputs = dims(op.inputs[1]), dims(op.inputs[2])
  else:
    kernel, outputs = dims(op.inputs[1]), dims(op.outputs[0])
  if None in kernel + outputs:
    return 0
  total = 2 * kernel[0] * kernel[1] * kernel[2]
  for d in outputs:
    total *= d
  return total


def op_flops(op) -> int:
  """Multiply-add FLOPs of one contraction op from its static shapes (0 for others)."""
  if op.type in CONVOLUTIONS:
    return conv_flops(op)
  shapes = [dims(t) for t in op.inputs]
  if any(None in s for s in shapes if s is not None):
    return 0
  if op.type == "MatMul":
    a, b = shapes
    ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    m, k = (a[1], a[0]) if ta else (a[0], a[1])
    n = b[0] if tb else b[1]
    return 2 * m * k * n
  if op.type.startswith("BatchMatMul"):
    a, b = shapes
    adj_a, adj_b = op.get_attr("adj_x"), op.get_attr("adj_y")
    m, k = (a[-1], a[-2]) if adj_a else (a[-2], a[-1])
    n = b[-2] if adj_b else b[-1]
    batch = 1
    for d in dims(op.outputs[0])[:-2]:
      batch *= d
    return 2 * batch * m * k * n
  if op.type == "Einsum":
    return einsum_flops(op.get_attr("equation").decode(), shapes)
  return 0


def graph_ops(graph):
  """Every op of a graph and of the function bodies it calls (each body once)."""
  seen = set()

  def visit(g):
    for op in g.get_operations():
      yield op
      if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
        name = op.get_attr("f").name
        fn = g._get_function(name)  # pylint: disable=protected-access
        if fn is not None and name not in seen and hasattr(fn, "graph"):
          seen.add(name)
          yield from visit(fn.graph)

  yield from visit(graph)


def graph_flops(graph) -> int:
  """Sums op_flops over a graph and the function bodies it calls."""
  return sum(op_flops(op) for op in graph_ops(graph))
