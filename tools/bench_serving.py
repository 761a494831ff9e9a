"""Benchmark of the exported LEO: export size, load time, request latency.

  python tools/bench_serving.py [--checkpoint_dir=runs/mini1] [--calls=1000]

Without --checkpoint_dir it exports a final-code model (gin/models/leo_final.gin,
5-way 1-shot, 640-d) with its initial weights: latency does not depend on the values.
The request is 5-way 1-shot with 75 queries. Load time and latency are measured in
fresh processes that do not import leo_tf, on both load paths:
  tf2      tf.saved_model.load + signatures["serving_default"]
  session  the TF1 Session loader and Session.run (what TF Serving runs), with TF's
           default thread pools and with one thread each (session-1thread; TF Serving:
           --tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=1)
CPU time per call is printed too: on a shared machine it is steadier than wall time.
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


def export_model(checkpoint_dir, export_base):
  if checkpoint_dir:
    from leo_tf.serving.export import export_checkpoint
    return export_checkpoint(checkpoint_dir, export_base, log=lambda _: None)
  from leo_tf import gin_config
  from leo_tf.leo.config import LEOConfig
  from leo_tf.leo.model import build_leo
  from leo_tf.serving.export import write_export
  gin_config.parse(["models/leo_final.gin"],
                   ["LEOConfig.num_classes = 5", "LEOConfig.num_shots = 1"])
  model = build_leo(LEOConfig(), 640)
  return write_export(model, os.path.join(export_base, "1"), normalize=True)


def directory_size(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint_dir", default=None)
  parser.add_argument("--calls", type=int, default=1000)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as base:
    import time
    start = time.perf_counter()
    directory = export_model(args.checkpoint_dir, base)
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
