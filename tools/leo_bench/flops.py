"""Multiply-add FLOPs of a traced graph: every MatMul / BatchMatMul / Einsum counts
2 * the product of its contracted and free dimensions; other ops count nothing."""


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


def op_flops(op) -> int:
  """Multiply-add FLOPs of one contraction op from its static shapes (0 for others)."""
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
