"""Benchmark of the exported LEO: export size, load time, request latency.

  python tools/bench_serving.py [--checkpoint_dir=runs/mini1] [--calls=1000]
  python tools/bench_serving.py --memory [--max_support=1000]   # largest allowed request

Without --checkpoint_dir it exports a final-code model (gin/models/leo_final.gin,
5-way 1-shot, 640-d) with its initial weights: latency does not depend on the values.
The request is 5-way 1-shot with 75 queries. Load time and latency are measured in
fresh processes that do not import leo_tf, on both load paths:
  tf2      tf.saved_model.load + signatures["serving_default"]
  session  the TF1 Session loader and Session.run (what TF Serving runs), with TF's
           default thread pools and with one thread each (session-1thread; TF Serving:
           --tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=1)
CPU time per call is printed too: on a shared machine it is steadier than wall time.

--memory measures instead the peak memory of the largest requests the export's
ServingLimits allow (N = max_classes with K = max_support / N, and N = 2 with
K = max_support / 2, each with M = max_queries), on the Session path in a fresh process
per request: the growth of the peak resident set (ru_maxrss) over a warmed-up process.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CLIENT = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
start = time.perf_counter()
import numpy as np, tensorflow as tf
import_s = time.perf_counter() - start
path, export_dir, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
req = dict(support_embeddings=rng.normal(size=(5, 640)).astype(np.float32),
           support_labels=np.array([3, 0, 4, 1, 2], np.int64),
           query_embeddings=rng.normal(size=(75, 640)).astype(np.float32))
start = time.perf_counter()
if path == "tf2":
  fn = tf.saved_model.load(export_dir).signatures["serving_default"]
  feed = {k: tf.constant(v) for k, v in req.items()}
  call = lambda: fn(**feed)["probabilities"].numpy()
else:
  tf.compat.v1.disable_eager_execution()
  threads = 1 if path == "session-1thread" else 0  # 0: TF's default pools
  sess = tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(
      intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads))
  meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
  sig = meta.signature_def["serving_default"]
  feed = {sig.inputs[k].name: v for k, v in req.items()}
  fetch = [sig.outputs["probabilities"].name, sig.outputs["labels"].name]
  call = lambda: sess.run(fetch, feed)
load_s = time.perf_counter() - start
start = time.perf_counter()
call()
first_s = time.perf_counter() - start
for _ in range(20):
  call()
wall, cpu = [], []
for _ in range(calls):
  t, c = time.perf_counter(), time.process_time()
  call()
  wall.append(time.perf_counter() - t)
  cpu.append(time.process_time() - c)
ms = lambda a, q: float(1e3 * np.percentile(a, q))
print(json.dumps(dict(path=path, import_s=import_s, load_s=load_s, first_call_s=first_s,
                      p50_ms=ms(wall, 50), p90_ms=ms(wall, 90), p99_ms=ms(wall, 99),
                      cpu_p50_ms=ms(cpu, 50), cpu_mean_ms=float(1e3 * np.mean(cpu)),
                      leo_tf_imported=any(m.startswith("leo_tf") for m in sys.modules))))
'''


_MEMORY_CLIENT = r'''
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, tensorflow as tf
export_dir, n, k, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tf.compat.v1.disable_eager_execution()
sess = tf.compat.v1.Session()
meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
sig = meta.signature_def["serving_default"]
fetch = [sig.outputs["probabilities"].name]
rng = np.random.default_rng(0)
def request(n, k, m):
  return {sig.inputs["support_embeddings"].name: rng.normal(size=(n * k, 640)).astype(np.float32),
          sig.inputs["support_labels"].name: np.repeat(np.arange(n, dtype=np.int64), k),
          sig.inputs["query_embeddings"].name: rng.normal(size=(m, 640)).astype(np.float32)}
small = request(5, 1, 75)
for _ in range(3):
  sess.run(fetch, small)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
big = request(n, k, m)
before = peak()
out = sess.run(fetch, big)[0]
print(json.dumps(dict(shape=list(out.shape), before=before, after=peak())))
'''


def export_model(checkpoint_dir, export_base, max_support=None):
  from leo_tf.serving.graph import ServingLimits
  limits = ServingLimits() if max_support is None else ServingLimits(max_support=max_support)
  if checkpoint_dir:
    from leo_tf.serving.export import export_checkpoint
    return export_checkpoint(checkpoint_dir, export_base, log=lambda _: None), limits
  from leo_tf import gin_config
  from leo_tf.leo.config import LEOConfig
  from leo_tf.leo.model import build_leo
  from leo_tf.serving.export import write_export
  gin_config.parse(["models/leo_final.gin"],
                   ["LEOConfig.num_classes = 5", "LEOConfig.num_shots = 1"])
  model = build_leo(LEOConfig(), 640)
  return write_export(model, os.path.join(export_base, "1"), normalize=True,
                      limits=limits), limits


def measure_memory(directory, limits):
  for n in (limits.max_classes, 2):
    k = limits.max_support // n
    out = subprocess.run([sys.executable, "-c", _MEMORY_CLIENT, directory, str(n), str(k),
                          str(limits.max_queries)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"N={n} K={k} (N*K={n * k}) M={limits.max_queries}: peak RSS "
          f"{r['after'] / 2**30:.2f} GiB, {(r['after'] - r['before']) / 2**30:.2f} GiB above "
          f"the warmed-up process ({r['before'] / 2**30:.2f} GiB); output {r['shape']}")


def directory_size(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint_dir", default=None)
  parser.add_argument("--calls", type=int, default=1000)
  parser.add_argument("--memory", action="store_true",
                      help="peak memory of the largest allowed requests instead")
  parser.add_argument("--max_support", type=int, default=None,
                      help="export with this ServingLimits.max_support (with --memory)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as base:
    import time
    start = time.perf_counter()
    directory, limits = export_model(args.checkpoint_dir, base, args.max_support)
    if args.memory:
      measure_memory(directory, limits)
      return
    export_s = time.perf_counter() - start
    size = directory_size(directory)
    extra = directory_size(os.path.join(directory, "assets.extra"))
    print(f"export: {export_s:.1f} s, {size / 1e6:.2f} MB on disk "
          f"({extra / 1e6:.2f} MB of it assets.extra: warm-up requests, metadata)")
    for path in ("tf2", "session", "session-1thread"):
      out = subprocess.run([sys.executable, "-c", _CLIENT, path, directory, str(args.calls)],
                           capture_output=True, text=True, check=True)
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(f"{path:15s} load {r['load_s']:.2f} s (TF import {r['import_s']:.1f} s), "
            f"first call {1e3 * r['first_call_s']:.0f} ms | {args.calls} calls 5-way 1-shot "
            f"75 queries: p50 {r['p50_ms']:.2f} ms p90 {r['p90_ms']:.2f} ms "
            f"p99 {r['p99_ms']:.2f} ms | CPU/call p50 {r['cpu_p50_ms']:.2f} ms "
            f"mean {r['cpu_mean_ms']:.2f} ms | leo_tf imported: {r['leo_tf_imported']}")
  print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
  main()
