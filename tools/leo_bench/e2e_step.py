"""The e2e target (issue 25): the outer step of frozen LEO against end-to-end LEO at the
typeface benchmark's sizes (WRN-10-2 at 32 px, 128-d features, 5-way, 15 queries a
class, meta-batch 12), 1- and 5-shot: median step time and the process's peak RSS.

Runs are interleaved (frozen, the backbone's pass alone and end-to-end at 1-shot, the
same at 5-shot, then again, ``--rounds`` times), each a fresh process, so the machine's
load drifts over all alike. Data: 64 synthetic classes of 40 random 32x32 RGB images (their
128-d synthetic embeddings for the frozen step); the backbone is freshly initialised,
which costs what a pre-trained one does.
"""

import statistics
import tempfile
import time

from leo_bench import backbone as backbone_lib
from leo_bench.floor import matmul_line
from leo_bench.flops import graph_flops
from leo_bench.targets import leo_trainer, synthetic_set

CLASSES, PER_CLASS = 64, 40
# 'backbone' is the backbone's share of an end-to-end step: its forward and backward pass
# over the step's images alone, frozen batch norm, no LEO (what end-to-end LEO adds).
MODES = ("frozen", "backbone", "end-to-end")


def _images(count: int):
  import numpy as np
  side = backbone_lib.WRN_10_2_32[2]
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)


class BackbonePass:
  """The backbone's forward + backward over one step's images (meta-batch 12 x 5 ways x
  (shots + 15) queries), as a trainer-like ``train_step`` and ``step_function``."""

  def __init__(self, backbone, shots: int):
    import tensorflow as tf
    from leo_tf.backbone import inputs
    images = tf.constant(_images(12 * 5 * (shots + 15)))
    gradients = backbone_lib.train_pass(backbone)
    self.step_function = tf.function(lambda: gradients(inputs.preprocess(images))[0])

  def train_step(self):
    return self.step_function().numpy()


def _trainer(mode: str, shots: int, args, out: str):
  """The step of ``mode`` on the synthetic typeface-sized data."""
  backbone = backbone_lib.build(backbone_lib.WRN_10_2_32)
  if mode == "backbone":
    return BackbonePass(backbone, shots)
  data = synthetic_set(CLASSES, 1, dim=backbone.output_shape[-1], per_class=PER_CLASS)
  if mode == "frozen":
    return leo_trainer(shots, args, out, train=data)
  from leo_tf.leo.end_to_end import EndToEnd, EndToEndConfig
  end_to_end = EndToEnd(EndToEndConfig(enabled=True), backbone, _images(len(data.keys)),
                        l2_normalize=True)
  return leo_trainer(shots, args, out, train=data, end_to_end=end_to_end)


def bench_step(args) -> dict:
  """One process: ``args.e2e_steps`` timed steps of ``args.e2e_mode`` at ``args.e2e_shots``
  after one untimed (tracing) step."""
  with tempfile.TemporaryDirectory() as out:
    trainer = _trainer(args.e2e_mode, args.e2e_shots, args, out + "/run")
    start = time.perf_counter()
    trainer.train_step()
    compile_s = time.perf_counter() - start
    steps_ms = []
    for _ in range(args.e2e_steps):
      start = time.perf_counter()
      trainer.train_step()
      steps_ms.append(1e3 * (time.perf_counter() - start))
    flops = graph_flops(trainer.step_function.get_concrete_function().graph)
  return dict(steps_ms=steps_ms, median_ms=statistics.median(steps_ms), compile_s=compile_s,
              flops_per_step=flops)


def bench_interleaved(one, forwarded, rounds: int) -> dict:
  """``rounds`` rounds of the four runs, each through ``one(target, argv)`` (a fresh
  process); the results by (mode, shots)."""
  runs = {}
  for _ in range(rounds):
    for shots in (1, 5):
      for mode in MODES:
        result = one("e2e_step", forwarded + ["--e2e-mode", mode, "--e2e-shots", str(shots)])
        runs.setdefault(f"{mode} {shots}-shot", []).append(result)
  return dict(runs=runs)


def report_interleaved(r: dict):
  print("== the outer step, frozen vs end-to-end LEO: WRN-10-2 at 32 px, 128-d, 5-way, "
        "15 queries a class, meta-batch 12 (each run a fresh process, interleaved)")
  print(matmul_line(r))
  print("\n| step | median ms (runs) | GFLOP / step | GFLOP/s | peak RSS MB (runs) | "
        "load average (1 min) at the runs |")
  print("|---" * 6 + "|")
  for name, runs in r["runs"].items():
    failed = [x["error"] for x in runs if "error" in x]
    if failed:
      print(f"| {name} | FAILED: {failed[0].strip().splitlines()[-1][:160]} |")
      continue
    medians = [x["median_ms"] for x in runs]
    gflop = runs[0]["flops_per_step"] / 1e9
    middle = statistics.median(medians)
    rss = ", ".join("%.0f" % x["peak_rss_mb"] for x in runs)
    loads = ", ".join(x["load_before"].split()[0] for x in runs)
    print(f"| {name} | {middle:,.1f} ({', '.join(f'{m:,.1f}' for m in medians)}) | "
          f"{gflop:.2f} | {gflop / middle * 1e3:.1f} | {rss} | {loads} |")
