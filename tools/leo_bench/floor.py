"""Timing: rates of repeated calls, this machine's matmul rate, and the floor of a graph
(its contractions and random draws alone, all concurrent)."""

import time

from leo_bench.flops import CONVOLUTIONS, dims, graph_ops, op_flops


def timed_rate(run_once, seconds: float, repeats: int):
  """Calls ``run_once() -> units`` for ``seconds`` per repeat; returns the unit rates."""
  rates = []
  for _ in range(repeats):
    units, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      units += run_once()
    rates.append(units / (time.perf_counter() - start))
  return rates


def ms_per_call(fn, seconds: float, repeats: int = 1) -> float:
  """Best milliseconds per ``fn().numpy()``, traced outside the timing."""
  fn().numpy()

  def once():
    fn().numpy()
    return 1

  return 1000.0 / max(timed_rate(once, seconds, repeats))


def matmul_gflops(seconds: float = 2.0, n: int = 2048) -> float:
  """This process's fp32 matmul rate on an n x n x n product (what 'peak' means here)."""
  import tensorflow as tf
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])

  @tf.function
  def product(x, y):
    return tf.reduce_sum(tf.matmul(x, y))

  product(a, b).numpy()
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    product(a, b).numpy()
    calls += 1
  return 2.0 * n ** 3 * calls / (time.perf_counter() - start) / 1e9


def matmul_line(r: dict) -> str:
  """The machine's matmul rate measured before and after a target, as reports print it."""
  return (f"   this CPU   fp32 matmul rate {r['matmul_gflops']:.1f} / "
          f"{r['matmul_gflops_after']:.1f} GFLOP/s (2048^3, before/after)")


def floor_ms(graph, seconds: float) -> dict:
  """A lower bound on one call of ``graph`` under this process's thread pools: the
  milliseconds its contractions (MatMul / BatchMatMul / Einsum) and its random-bit draws
  take alone, on fresh inputs of the same shapes, all independent of each other (so TF
  runs them as concurrently as it can), with none of the call's other ops."""
  import numpy as np
  import tensorflow as tf
  rng = np.random.default_rng(0)
  contractions, words = [], []
  for op in graph_ops(graph):
    if op_flops(op) and op.type not in CONVOLUTIONS:  # LEO's steps have none
      inputs = [tf.constant(rng.standard_normal(dims(t)), tf.float32) for t in op.inputs]
      contractions.append((op.type, dict(op.node_def.attr), inputs))
    elif op.type == "StatelessRandomUniformFullIntV2":
      count = int(np.prod(dims(op.outputs[0])))  # bulk draws are 1-D, static per trace
      words.append(count)

  def contract(kind, attr, inputs):
    if kind == "MatMul":
      return tf.linalg.matmul(*inputs, transpose_a=attr["transpose_a"].b,
                              transpose_b=attr["transpose_b"].b)
    if kind.startswith("BatchMatMul"):
      return tf.linalg.matmul(*inputs, adjoint_a=attr["adj_x"].b, adjoint_b=attr["adj_y"].b)
    return tf.einsum(attr["equation"].s.decode(), *inputs)

  def run(parts):
    # One element of each result keeps its op alive (unused stateless ops are pruned,
    # control dependencies included): one slice op per part, ~1.7 us each here.
    first = lambda x: tf.cast(x[(0,) * x.shape.rank], tf.float32)
    return ms_per_call(tf.function(lambda: tf.add_n([first(p()) for p in parts])), seconds, 2)

  seed = tf.constant([1, 2], tf.int64)
  draw = lambda n: (lambda: tf.random.stateless_uniform(
      [n], seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"))
  products = [lambda c=c: contract(*c) for c in contractions]
  return dict(contractions_ms=run(products), random_ms=run([draw(n) for n in words]),
              floor_ms=run(products + [draw(n) for n in words]),
              contractions=len(contractions), random_words=sum(words))
