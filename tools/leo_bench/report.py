"""One target's result as the lines tools/bench prints."""

from leo_bench.e2e_plan import report_plan
from leo_bench.e2e_step import report_interleaved
from leo_bench.stream import report_stream
from leo_bench.targets import TARGETS


def report(target: str, r: dict):
  if target in ("e2e_plan", "e2e"):  # no target figure to meet
    (report_plan if target == "e2e_plan" else report_interleaved)(r)
    return
  title, unit, sense, goal = TARGETS[target]
  ok = r["value"] >= goal if sense == ">=" else r["value"] <= goal
  if target == "stream":
    print(f"== {title}\n   measured   {r['value']:.3f} {unit} (target {sense} {goal:g}: "
          f"{'MET' if ok else 'NOT MET'})")
    report_stream(r)
    print(f"   memory     peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"   load avg   {r['load_before']} (before) / {r['load_after']} (after)")
    return
  achieved = r["flops_per_call"] * r["calls_per_s"] / 1e9
  peak = max(r["matmul_gflops"], r["matmul_gflops_after"])
  print(f"== {title}")
  print(f"   measured   {r['value']:.1f} {unit} (target {sense} {goal:g}: "
        f"{'MET' if ok else 'NOT MET'}); repeats {', '.join(f'{v:.1f}' for v in r['all'])}"
        if "all" in r else f"   measured   {r['value']:.2f} {unit} (target {sense} {goal:g}: "
        f"{'MET' if ok else 'NOT MET'}); p50 {r['p50']:.2f} ms, {r['requests']} requests")
  extra = {k: r[k] for k in ("steps_per_s", "compile_s", "traces", "accuracy", "how", "batch")
           if k in r}
  extra.update(r.get("profile", {}))
  if extra:
    print("   details    " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in extra.items()))
  if "floor" in r:
    f = r["floor"]
    print(f"   floor      {f['floor_ms']:.1f} ms per step = at most {12000 / f['floor_ms']:.0f} "
          f"episodes/s: the step's {f['contractions']} contractions ({f['contractions_ms']:.1f} "
          f"ms alone) and {f['random_words'] / 1e6:.2f} M random words "
          f"({f['random_ms']:.1f} ms alone), all concurrent, no other op")
  print(f"   memory     peak RSS {r['peak_rss_mb']:.0f} MB")
  print(f"   FLOPs      {r['flops_per_call'] / 1e6:.1f} MFLOP per call (analytic, graph "
        f"MatMul/BatchMatMul/Einsum) -> {achieved:.2f} GFLOP/s = "
        f"{100 * achieved / peak:.1f}% of this machine's fp32 matmul rate "
        f"({r['matmul_gflops']:.1f} / {r['matmul_gflops_after']:.1f} GFLOP/s before/after)")
  print(f"   load avg   {r['load_before']} (before) / {r['load_after']} (after)")
