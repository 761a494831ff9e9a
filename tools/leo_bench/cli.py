"""The tools/bench command line: each target in its own subprocess, the machine's matmul
rate measured before and after it."""

import argparse
import json
import os
import resource
import subprocess
import sys

from leo_bench.e2e_plan import bench_plan
from leo_bench.e2e_step import bench_interleaved, bench_step
from leo_bench.floor import matmul_gflops
from leo_bench.report import report
from leo_bench.stream import bench_stream
from leo_bench.targets import TARGETS, bench_eval, bench_serve, bench_train

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def load_average() -> str:
  return "%.2f %.2f %.2f" % os.getloadavg()


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(target: str, args) -> dict:
  from leo_tf.runtime import threads  # pylint: disable=import-outside-toplevel
  threads.configure(threads.Threads(args.intra, args.inter))
  if target == "peak":
    return dict(gflops=matmul_gflops())
  load_before = load_average()
  if target in ("train1", "train5"):
    result = bench_train(int(target[-1]), args)
  elif target == "eval":
    result = bench_eval(args)
  elif target == "stream":
    result = bench_stream(args)
  elif target == "e2e_plan":
    result = bench_plan(args)
  elif target == "e2e_step":
    result = bench_step(args)
  else:
    result = bench_serve(args)
  result.update(peak_rss_mb=peak_rss_mb(), load_before=load_before,
                load_after=load_average())
  return result


def strip_targets(argv):
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a == "--targets":
      skip = True
    elif not a.startswith("--targets="):
      out.append(a)
  return out


def parse_args(description: str):
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--targets", default="train1,train5,eval,serve")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=3)
  # Defaults as in leo-train (leo_tf.runtime.threads.Threads); 0 keeps TF's default pool.
  parser.add_argument("--intra", type=int, default=1, help="intra-op threads (0: TF default)")
  parser.add_argument("--inter", type=int, default=-1,
                      help="inter-op threads (-1: usable cores, 0: TF default)")
  # Off by default, like TrainConfig.jit_compile: XLA:CPU is slower here at 5-shot.
  parser.add_argument("--xla", action="store_true", help="jit_compile the outer step")
  parser.add_argument("--inner-gradients", default="closed_form", choices=("closed_form", "tape"),
                      help="LEOConfig.inner_gradients (tape: the reference inner loops)")
  parser.add_argument("--task-groups", type=int,
                      help="TrainConfig.task_groups (default: TrainConfig's)")
  parser.add_argument("--eval-episodes", type=int, default=10000)
  parser.add_argument("--eval-batch", type=int, default=100)
  parser.add_argument("--stream-requests", type=int, default=10000,
                      help="single-query requests of the stream target")
  parser.add_argument("--rounds", type=int, default=3,
                      help="interleaved rounds of the e2e target (a process per run)")
  parser.add_argument("--e2e-steps", type=int, default=5,
                      help="timed outer steps per run of the e2e target")
  parser.add_argument("--e2e-mode", default="frozen", help=argparse.SUPPRESS)
  parser.add_argument("--e2e-shots", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args()
  unknown = [t for t in args.targets.split(",") if t not in TARGETS]
  if unknown:  # before any target runs, not as a KeyError after the first
    parser.error(f"unknown --targets {','.join(unknown)}; choose from {','.join(TARGETS)}")
  return args


def main(description: str = "Benchmarks LEO"):
  args = parse_args(description)
  if args.one:
    print("BENCH_JSON " + json.dumps(run_one(args.one, args)))
    return
  print(f"leo_tf benchmark: {os.cpu_count()} CPUs, affinity "
        f"{sorted(os.sched_getaffinity(0))}, threads intra={args.intra or 'TF default'} "
        f"inter={args.inter or 'TF default'}, inner_gradients={args.inner_gradients}, "
        f"xla={args.xla}, task_groups={args.task_groups or 'default'}")
  forwarded = strip_targets(sys.argv[1:])
  for target in args.targets.split(","):
    # The machine's matmul rate in its own process with TF's default (all-core) pools:
    # the target's process may run one thread per op.
    before = _one("peak", ["--intra", "0", "--inter", "0"])
    if target == "e2e":  # several processes, interleaved
      result = bench_interleaved(_one, forwarded, args.rounds)
    else:
      result = _one(target, forwarded)
    after = _one("peak", ["--intra", "0", "--inter", "0"])
    if "error" in result:
      print(f"== {target}: FAILED\n{result['error']}")
      continue
    result.update(matmul_gflops=before.get("gflops", float("nan")),
                  matmul_gflops_after=after.get("gflops", float("nan")))
    report(target, result)
    sys.stdout.flush()


def _one(target: str, argv) -> dict:
  out = subprocess.run([sys.executable, BENCH, "--one", target] + argv,
                       capture_output=True, text=True)
  lines = [l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")]
  if out.returncode or not lines:
    return dict(error=out.stderr[-3000:])
  return json.loads(lines[-1][len("BENCH_JSON "):])
