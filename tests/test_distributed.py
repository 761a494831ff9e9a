"""Pre-training under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy
(2 local worker processes). Each runs in fresh processes: logical devices must be set
before TensorFlow runs any op, and a collective cluster must not outlive its test."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distributed_worker.py")
TIMEOUT = 420  # seconds; a hung collective fails the test instead of blocking CI


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(kind, model_dir, env_extra=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
  return subprocess.Popen([sys.executable, WORKER, kind, str(model_dir)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs):
  """Waits for all; kills the rest when one fails or times out. Returns RESULT dicts."""
  results = []
  try:
    for proc in procs:
      out, _ = proc.communicate(timeout=TIMEOUT)
      assert proc.returncode == 0, out[-3000:]
      lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
      assert lines, out[-3000:]
      results.append(json.loads(lines[-1][len("RESULT "):]))
  except subprocess.TimeoutExpired:
    pytest.fail(f"distributed worker did not finish within {TIMEOUT}s")
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
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
  ports = [_free_port(), _free_port()]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = [_start("multi_worker", tmp_path, {"TF_CONFIG": json.dumps(
      {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)]
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
