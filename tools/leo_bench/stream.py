"""The stream target (issue 24): one registered 5-way 5-shot support set and a stream of
single-query requests, adapted per request (serving_default) against adapted once and
classified (adapt, then classify), and adapted once by leo_tf.FewShotClassifier (fit: the
adapt signature) whose predict classifies in numpy; and an unbalanced 20-way support set
(1 to 20 shots a class) against a balanced one of the same total. All through an exported
SavedModel, reloaded in this process."""

import os
import tempfile
import time

from leo_bench.targets import DIM, PER_CLASS, model_config, synthetic_set

# 20 classes, 1 to 20 shots, 200 in all (11 shots replaced by 1): as many as 20-way 10-shot.
UNBALANCED_SHOTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def _latencies(call, inputs):
  """Milliseconds of ``call(x)`` for each x of ``inputs``."""
  out = []
  for x in inputs:
    start = time.perf_counter()
    call(x)
    out.append(1000.0 * (time.perf_counter() - start))
  return out


def _read(outputs):
  """A signature's outputs read back to numpy (part of a request's time)."""
  return {k: v.numpy() for k, v in outputs.items()}


def _summary(latencies):
  import numpy as np
  lat = np.array(latencies)
  return dict(p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)),
              queries_per_s=1000.0 * lat.size / float(lat.sum()), requests=int(lat.size))


def _support(x, shots):
  """Support rows and labels: the first ``shots[c]`` examples of class c of x [C, n, d]."""
  import numpy as np
  import tensorflow as tf
  rows = np.concatenate([x[c, :k] for c, k in enumerate(shots)])
  labels = np.repeat(np.arange(len(shots)), shots).astype(np.int64)
  return dict(support_embeddings=tf.constant(rows), support_labels=tf.constant(labels))


def bench_stream(args) -> dict:
  import tensorflow as tf
  from leo_tf.leo.model import build_leo
  from leo_tf.serving import export
  from leo_tf.serving.classifier import FewShotClassifier
  model = build_leo(model_config(5, args), DIM)
  x = synthetic_set(20, 5).embeddings.reshape(20, PER_CLASS, DIM)
  support = _support(x[:5], [5] * 5)
  stream = [tf.constant(x[i % 5, 5 + i // 5 % (PER_CLASS - 5)][None])
            for i in range(args.stream_requests)]
  with tempfile.TemporaryDirectory() as out:
    path = export.write_export(model, os.path.join(out, "1"), normalize=True)
    signatures = tf.saved_model.load(path).signatures
    serve, adapt = signatures[export.SERVING_DEFAULT], signatures[export.ADAPT_SIGNATURE]
    classify = signatures[export.CLASSIFY_SIGNATURE]
    per_request = lambda q: _read(serve(query_embeddings=q, **support))
    _latencies(per_request, stream[:20])                              # warm up
    each = _summary(_latencies(per_request, stream))
    start = time.perf_counter()
    classifier = adapt(**support)
    adapt_ms = 1000.0 * (time.perf_counter() - start)
    once = lambda q: _read(classify(query_embeddings=q, **classifier))
    _latencies(once, stream[:20])
    classified = _summary(_latencies(once, stream))
    fitted = FewShotClassifier(path).fit(*(v.numpy() for v in support.values()))
    rows = [q.numpy() for q in stream]
    _latencies(fitted.predict, rows[:20])
    predicted = _summary(_latencies(fitted.predict, rows))
    shapes = {}
    for name, shots in (("unbalanced", UNBALANCED_SHOTS), ("balanced", [10] * 20)):
      request = _support(x, shots)
      try:
        shapes[name] = _summary(_latencies(lambda _: _read(adapt(**request)),
                                           range(args.repeats * 10)))
      except tf.errors.InvalidArgumentError as error:
        lines = [l for l in error.message.splitlines() if "assertion failed" in l]
        shapes[name] = dict(refused=(lines or [error.message])[0][:200])
  return dict(value=classified["p99"], per_request=each, adapt_once=classified,
              numpy_predict=predicted, adapt_ms=adapt_ms,
              speedup=classified["queries_per_s"] / each["queries_per_s"],
              numpy_speedup=predicted["queries_per_s"] / each["queries_per_s"], shapes=shapes)


def report_stream(r: dict):
  """The stream target's lines: the two ways side by side, then the 20-way shapes."""
  print("   per request (serving_default: adapt + classify each query) vs adapt once + classify"
        " (signature) vs FewShotClassifier.fit once + predict (numpy)")
  for name in ("per_request", "adapt_once", "numpy_predict"):
    s = r[name]
    print(f"   {name:<13} p50 {s['p50']:.3f} ms, p99 {s['p99']:.3f} ms, "
          f"{s['queries_per_s']:.0f} queries/s over {s['requests']} requests")
  for name, key in (("classify signature", "speedup"), ("numpy predict", "numpy_speedup")):
    print(f"   {name}: throughput {r[key]:.1f}x per request "
          f"(target >= 20x: {'MET' if r[key] >= 20 else 'NOT MET'})")
  print(f"   adapt once {r['adapt_ms']:.1f} ms (first call)")
  for name, s in r["shapes"].items():
    shots = "1-20 shots" if name == "unbalanced" else "10 shots"
    line = (f"refused: {s['refused']}" if "refused" in s else
            f"p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms over {s['requests']} adapt calls")
    print(f"   20-way {shots} (200 support rows), {name}: {line}")
