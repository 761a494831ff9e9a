"""Pre-training under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy
(2 local worker processes), and LEO meta-training under both. Each runs in fresh
processes: logical devices must be set before TensorFlow runs any op, and a collective
cluster must not outlive its test."""

import glob
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from _processes import free_port, wait_all
from leo_tf.runtime.rundir import RunDir

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distributed_worker.py")
TIMEOUT = 420  # seconds; a hung collective fails the test instead of blocking CI


def _start(kind, model_dir, env_extra=None, args=()):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
  return subprocess.Popen([sys.executable, WORKER, kind, str(model_dir), *map(str, args)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _tf_configs(num_workers):
  """One TF_CONFIG per worker of a loopback cluster (worker 0 is the chief)."""
  cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(num_workers)]}
  return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                  "index": i}})}
          for i in range(num_workers)]


def _finish(procs, outputs=None):
  """Waits for all (see wait_all); returns their RESULT dicts (and appends each
  process's output to ``outputs``)."""
  results = []
  for out in wait_all(procs, TIMEOUT):
    if outputs is not None:
      outputs.append(out)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert lines, out[-3000:]
    results.append(json.loads(lines[-1][len("RESULT "):]))
  return results


def test_mirrored_on_two_logical_cpus_lowers_the_loss(tmp_path):
  (result,) = _finish([_start("mirrored", tmp_path)])
  assert result["replicas"] == 2
  assert result["final_step"] == 30
  assert result["losses"][-1] < 0.5 * result["losses"][0]


def test_leo_meta_training_on_two_replicas_learns(tmp_path):
  (result,) = _finish([_start("leo_mirrored", tmp_path)])
  assert result["replicas"] == 2 and result["final_step"] == 60
  assert result["replicas_differ"]             # each replica samples its own episodes
  first, last = np.mean(result["first_losses"]), np.mean(result["last_losses"])
  assert last < 0.8 * first, (first, last)


def test_multi_worker_ends_with_identical_weights(tmp_path):
  procs = [_start("multi_worker", tmp_path, c) for c in _tf_configs(2)]
  chief, worker = _finish(procs)
  assert chief["replicas"] == worker["replicas"] == 2
  assert chief["losses"] == worker["losses"]
  assert chief["losses"][-1] < chief["losses"][0]
  assert chief["backbone_path"] == str(tmp_path / "backbone.keras")
  assert worker["backbone_path"] == str(tmp_path / "worker_1" / "backbone.keras")

  import keras  # pylint: disable=g-import-not-at-top
  a = keras.saving.load_model(chief["backbone_path"], compile=False)
  b = keras.saving.load_model(worker["backbone_path"], compile=False)
  assert len(a.weights) == len(b.weights) > 0
  for wa, wb in zip(a.weights, b.weights):  # batch-norm moving statistics included
    np.testing.assert_array_equal(wa.numpy(), wb.numpy(), err_msg=wa.path)


def _write_embeddings(root):
  from helpers import synthetic_embeddings  # pylint: disable=g-import-not-at-top
  from leo_tf.data.embeddings import embeddings_path, save_embeddings
  for split, seed in (("train", 0), ("val", 1), ("test", 2)):
    data = synthetic_embeddings(10, 8, dim=16, seed=seed, prefix=split[0])
    save_embeddings(embeddings_path(str(root), "synthetic", "center", split, ".npz"),
                    data.embeddings, data.class_ids, data.keys)


def _steps(output):
  return {int(m.group(1)): float(m.group(2))
          for m in re.finditer(r"^STEP (\d+) (\S+)$", output, re.M)}


def test_leo_multi_worker_chief_writes_resumes_after_both_die(tmp_path):
  """Two worker processes run leo-train's run_experiment (120 steps, a checkpoint every
  10); both are killed mid-run, restarted, and must resume from the chief's checkpoint
  and end with identical weights, with one set of outputs in the run directory."""
  root, run = tmp_path / "embeddings", tmp_path / "run"
  _write_embeddings(root)
  configs = _tf_configs(2)
  slow = [_start("leo_multi_worker", run, dict(c, LEO_TEST_STEP_DELAY="0.05"), [root])
          for c in configs]
  try:
    deadline = time.time() + TIMEOUT
    while not os.path.exists(os.path.join(RunDir(run).checkpoints("latest"), "ckpt-30.index")):
      assert time.time() < deadline, "no checkpoint at step 30"
      assert all(p.poll() is None for p in slow), slow[0].communicate()[0][-3000:]
      time.sleep(0.1)
  finally:
    for p in slow:
      p.kill()
  first = [_steps(p.communicate()[0]) for p in slow]
  killed_at = max(max(f) for f in first)
  assert 30 <= killed_at < 120
  # The loss is all-reduced, so it is the same on both; a kill lands between one
  # process's print and the other's, so compare the steps both printed.
  shared = sorted(first[0].keys() & first[1].keys())
  assert shared == list(range(1, len(shared) + 1)) and len(shared) >= killed_at - 1
  assert {s: first[0][s] for s in shared} == {s: first[1][s] for s in shared}

  procs = [_start("leo_multi_worker", run, c, [root]) for c in configs]
  outputs = []
  chief, worker = _finish(procs, outputs)
  assert (chief["chief"], worker["chief"]) == (True, False)
  assert chief["replicas"] == worker["replicas"] == 2
  assert chief["final_step"] == worker["final_step"] == 120
  # Both resumed from the chief's newest checkpoint (the worker's copies are gone).
  resumed = [re.search(r"at step (\d+)", r["resumed"][0]).group(1) for r in (chief, worker)]
  assert resumed[0] == resumed[1] and 30 <= int(resumed[0]) <= killed_at
  assert chief["weights"] == worker["weights"]
  second = [_steps(o) for o in outputs]
  assert second[0] == second[1] and min(second[0]) == int(resumed[0]) + 1
  losses = [first[0][s] for s in range(1, 11)], [second[0][s] for s in range(111, 121)]
  assert np.mean(losses[1]) < 0.8 * np.mean(losses[0]), losses

  # One set of outputs, all written by the chief's two processes.
  assert sorted(os.listdir(run)) == ["best", "config.gin", "latest", "operative_config.gin",
                                     "tensorboard"]
  assert json.load(open(RunDir(run).best_record))["step"] in (30, 60, 90, 120)
  events = glob.glob(os.path.join(RunDir(run).tensorboard, "events.out.tfevents.*"))
  pids = {str(p.pid) for p in (slow[0], procs[0])}
  assert len(events) == 2 and {os.path.basename(e).split(".")[-3] for e in events} == pids
  assert "[result]" in outputs[0] and "[result]" not in outputs[1]
  assert "[worker_1] the chief evaluates the test split" in outputs[1]


def test_end_to_end_multi_worker_chief_writes_the_run_and_its_backbone(tmp_path):
  """End-to-end LEO through run_experiment on two worker processes (6 steps, validation
  and a checkpoint at 3 and 6): both end with the same weights, the backbone's included;
  only the chief writes the run, its backbone and embeddings, and tests."""
  inputs, run = tmp_path / "inputs", tmp_path / "run"
  wait_all([_start("e2e_prepare", inputs)], TIMEOUT)  # one backbone file for both workers
  procs = [_start("e2e_multi_worker", run, c, [inputs]) for c in _tf_configs(2)]
  outputs = []
  chief, worker = _finish(procs, outputs)
  assert (chief["chief"], worker["chief"]) == (True, False)
  assert chief["replicas"] == worker["replicas"] == 2
  assert chief["final_step"] == worker["final_step"] == 6
  assert chief["weights"] == worker["weights"]  # LEO's and the backbone's
  assert chief["backbone_moved"] == worker["backbone_moved"] > 0
  # The chief's files only: no worker_1/ (the worker's checkpoint copies) is left.
  assert sorted(os.listdir(run)) == ["backbone.keras", "best", "config.gin", "embeddings",
                                     "latest", "operative_config.gin", "tensorboard"]
  events = os.listdir(RunDir(run).tensorboard)
  assert len(events) == 1 and events[0].split(".")[-3] == str(procs[0].pid)
  assert sorted(os.listdir(os.path.join(RunDir(run).embeddings, "tiny", "center"))) == [
      f"{s}_embeddings.pkl" for s in ("test", "train", "val")]
  assert "[result]" in outputs[0] and "[result]" not in outputs[1]
  assert "[worker_1] the chief evaluates the test split" in outputs[1]
