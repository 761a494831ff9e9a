"""The e2e_plan target (issue 25): memory and time of one outer step of end-to-end LEO
with WRN-28-10 at 80x80 px on GPUs, from what is counted and measured here (the
backbone's FLOPs and kept activations from its traced graph and layer shapes, LEO's own
step from the frozen trainer's graph, seconds per image on this CPU) and from stated
assumptions about the GPU (``GPU``: peak rates, utilisation, bandwidth, overheads).

The step's cost model: every image of a replica's tasks goes through the backbone
forward and backward once (batch norm frozen; LEO's second order touches only the
640-d features, so the backbone's backward is first order), LEO's own step (at most a
few GFLOP of small products) is bound by kernel launches, and the replicas' gradients
are summed in one all-reduce of the whole gradient vector after the backward pass (as
MetaTrainer does), not overlapped with it.
"""

import statistics
import tempfile

from leo_bench import backbone
from leo_bench.floor import matmul_line
from leo_bench.flops import graph_flops, graph_ops

WAYS, QUERIES, META_BATCH = 5, 15, 12
# Assumptions, not measurements (no GPU here). Peak rates are NVIDIA's dense figures for
# an A100 40GB SXM; the utilisation of the convolutions is a (low, central, high) guess
# for wide 3x3 convolutions at batches of ~100 images: near the CUDA cores' peak in fp32,
# far below the tensor cores' peak in TF32 / bf16 (elementwise work and memory traffic
# do not shrink with them).
GPU = dict(
    name="A100 40GB SXM", memory_gb=40.0,
    peak_tflops=dict(fp32=19.5, tf32=156.0, bf16=312.0),
    utilisation=dict(fp32=(0.45, 0.6, 0.7), tf32=(0.2, 0.3, 0.45), bf16=(0.15, 0.25, 0.4)),
    allreduce_gbps=200.0,    # NCCL bus bandwidth over NVLink (DGX A100); PCIe 4.0: ~20
    launch_us=10.0,          # per op of LEO's step, which is ~2,000 small ops
    overhead_gb=2.5)         # CUDA context, cuDNN workspaces, LEO's own tensors
# The meta-training images, uint8 on every GPU (end-to-end LEO gathers a step's images
# from them in the step): miniImageNet's 64 x 600 train images at 80x80 RGB.
TRAIN_IMAGES_GB = 64 * 600 * 80 * 80 * 3 / 1e9
ACTIVATION_BYTES = dict(fp32=4, tf32=4, bf16=2)
# Bytes per backbone parameter: the float32 weight, its gradient, Adam's two moments
# (and the bf16 copy the mixed policy casts to).
PARAM_BYTES = dict(fp32=16, tf32=16, bf16=18)


def images_per_task(shots: int) -> int:
  return WAYS * (shots + QUERIES)


def leo_step(shots: int, args) -> dict:
  """FLOPs, op count and parameters of the frozen LEO step at 640-d, meta-batch 12."""
  from leo_bench.targets import leo_trainer
  with tempfile.TemporaryDirectory() as out:
    trainer = leo_trainer(shots, args, out)
    graph = trainer.step_function.get_concrete_function().graph
    params = sum(int(v.shape.num_elements()) for v in trainer.model.trainable_variables)
    return dict(flops=graph_flops(graph), ops=sum(1 for _ in graph_ops(graph)), params=params)


def bench_plan(args) -> dict:
  """What the plan needs from this machine: the counts, and the CPU calibration."""
  measured = {}
  for name, spec, batch in (("wrn_10_2_32", backbone.WRN_10_2_32, 240),
                            ("wrn_28_10_80", backbone.WRN_28_10_80, 8)):
    measured[name] = dict(backbone.costs(spec), **backbone.measure(spec, batch, args.repeats))
  return dict(backbones=measured, leo={s: leo_step(s, args) for s in (1, 5)})


def step_estimate(r: dict, shots: int, precision: str, gpus: int, meta_batch: int) -> dict:
  """One replica's step: images, TFLOP, memory (GB) and seconds (low, central, high)."""
  wrn, leo = r["backbones"]["wrn_28_10_80"], r["leo"][str(shots)]
  tasks = meta_batch // gpus
  images = tasks * images_per_task(shots)
  tflop = images * wrn["train_flops"] / 1e12
  rate = GPU["peak_tflops"][precision]
  launches = leo["ops"] * GPU["launch_us"] * 1e-6
  grad_bytes = 4 * (wrn["params"] + leo["params"])
  allreduce = 2 * (gpus - 1) / gpus * grad_bytes / (GPU["allreduce_gbps"] * 1e9)
  seconds = [tflop / (rate * u) + launches + allreduce
             for u in GPU["utilisation"][precision]]
  # What the backward pass keeps, and every layer output as the upper bound.
  activations = [images * wrn[k] * ACTIVATION_BYTES[precision] / 1e9
                 for k in ("kept", "all_outputs")]
  fixed = wrn["params"] * PARAM_BYTES[precision] / 1e9 + GPU["overhead_gb"] + TRAIN_IMAGES_GB
  return dict(tasks=tasks, images=images, tflop=tflop, activations_gb=activations,
              memory_gb=[a + fixed for a in activations], seconds=seconds,
              allreduce_ms=1e3 * allreduce, tasks_per_s=meta_batch / seconds[1])


def _calibration(r: dict):
  peak = max(r["matmul_gflops"], r["matmul_gflops_after"])
  print(matmul_line(r))
  for name, b in r["backbones"].items():
    per_image = statistics.median(b["seconds_per_image"])
    achieved = b["train_flops"] / per_image / 1e9
    kept_mb = b["kept"] * 4 * (b["batch"] - 1) / 2 ** 20
    print(f"   {name:<12} {b['params'] / 1e6:.2f} M params; per image "
          f"{b['forward_flops'] / 1e9:.3f} GFLOP forward, {b['train_flops'] / 1e9:.3f} forward + backward "
          f"({b['train_flops'] / b['forward_flops']:.2f}x); activations kept for the backward "
          f"{b['kept'] / 1e6:.2f} M values (all layer outputs {b['all_outputs'] / 1e6:.2f} M)")
    print(f"   {'':<12} measured forward + backward, batch {b['batch']}: "
          f"{', '.join(f'{1e3 * s:.1f}' for s in b['seconds_per_image'])} ms per image -> "
          f"{achieved:.1f} GFLOP/s ({100 * achieved / peak:.0f}% of the matmul rate); peak RSS "
          f"grew {b['rss_growth_mb']:.0f} MB from batch 1 to {b['batch']} (kept values, fp32: "
          f"{kept_mb:.0f} MB)")
  for shots, leo in r["leo"].items():
    print(f"   LEO step   {shots}-shot, 640-d, meta-batch 12: {leo['flops'] / 1e9:.2f} GFLOP, "
          f"{leo['ops']} ops, {leo['params']:,} parameters")


def report_plan(r: dict):
  wrn = r["backbones"]["wrn_28_10_80"]
  cpu_s = statistics.median(wrn["seconds_per_image"])
  print("== end-to-end LEO on GPUs: WRN-28-10 at 80x80, 5-way, 15 queries a class")
  _calibration(r)
  print(f"   assumed GPU {GPU['name']}: peak {GPU['peak_tflops']} TFLOP/s, convolution "
        f"utilisation (low, central, high) {GPU['utilisation']}, all-reduce "
        f"{GPU['allreduce_gbps']:g} GB/s, {GPU['launch_us']:g} us per LEO op, "
        f"{GPU['overhead_gb']:g} GB overhead, {TRAIN_IMAGES_GB:.2f} GB of train images")
  print("\n| shots | precision | GPUs | meta-batch | images / GPU | backbone TFLOP / GPU | "
        "activations GB, kept (all) | memory GB / GPU | step s (range) | tasks/s | "
        "all-reduce ms |")
  print("|---" * 11 + "|")
  plans = [(1, p, 1, META_BATCH) for p in ("fp32", "tf32", "bf16")]
  plans += [(g, p, g, b) for g, b in ((6, 12), (8, 16), (8, 8)) for p in ("fp32", "bf16")]
  for shots in (1, 5):
    for _, precision, gpus, batch in plans:
      e = step_estimate(r, shots, precision, gpus, batch)
      low, mid, high = e["seconds"]
      kept, upper = e["memory_gb"]
      fits = "" if upper <= GPU["memory_gb"] else " (!)" if kept > GPU["memory_gb"] else " (?)"
      print(f"| {shots} | {precision} | {gpus} | {batch} | {e['images']} | {e['tflop']:.1f} | "
            "%.1f (%.1f) | %.1f (%.1f)%s | " % (*e["activations_gb"], kept, upper, fits) +
            f"{mid:.2f} "
            f"({high:.2f}-{low:.2f}) | {e['tasks_per_s']:.1f} | {e['allreduce_ms']:.1f} |")
  print(f"   (!) does not fit in {GPU['memory_gb']:g} GB; (?) fits only if the backward "
        "keeps less than every layer output")
  for shots in (1, 5):
    images = META_BATCH * images_per_task(shots)
    print(f"   this CPU   {shots}-shot step: {images} images x {cpu_s:.2f} s = "
          f"{images * cpu_s / 60:.0f} min (backbone alone, at the measured rate)")
  print(f"   load avg   {r['load_before']} (before) / {r['load_after']} (after)")
