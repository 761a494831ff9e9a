"""leo-tune in keras-tuner's distributed mode: an oracle chief and two workers on
loopback, each a leo-tune process, sharing one output directory."""

import json
import os
import shutil
import subprocess

from _processes import free_port, wait_all
from leo_tf.tuning import hypermodel, search
from test_tuning import write_config

TRIALS = 4
TIMEOUT = 600  # seconds; a hung search fails the test instead of blocking CI


def _leo_tune(paths, out, *flags, env=None):
  command = [shutil.which("leo-tune"), f"--gin_file={paths['base.gin']}",
             "--gin_bindings=LEOConfig.num_shots = 1", f"--space_file={paths['space.gin']}",
             "--tuner=random", f"--max_trials={TRIALS}", f"--output_dir={out}", *flags]
  return subprocess.Popen(command, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_chief_and_two_workers_run_every_trial_once(tmp_path):
  paths = write_config(str(tmp_path))
  out = tmp_path / "out"
  oracle = f"127.0.0.1:{free_port()}"
  # The chief by flags, the workers by keras-tuner's own environment variables.
  procs = [_leo_tune(paths, out, "--tuner_id=chief", f"--oracle={oracle}")]
  host, port = oracle.split(":")
  procs += [_leo_tune(paths, out, env=dict(KERASTUNER_TUNER_ID=f"tuner{i}",
                                           KERASTUNER_ORACLE_IP=host,
                                           KERASTUNER_ORACLE_PORT=port))
            for i in range(2)]
  outputs = wait_all(procs, TIMEOUT)
  chief, *workers = outputs

  project = out / search.PROJECT
  trial_dirs = sorted(d for d in os.listdir(project) if d.startswith("trial_"))
  assert trial_dirs == [f"trial_{i}" for i in range(TRIALS)]
  ran_by = {}
  for name in trial_dirs:
    with open(project / name / "trial.json") as f:
      assert json.load(f)["status"] == "COMPLETED", name
    record = hypermodel.read_record(str(project / name))
    ran_by[name] = record["tuner"]
    with open(project / name / "train.log") as f:   # trained once, by one worker
      assert sum(l.startswith("[validate]") for l in f) == 2, name
  assert set(ran_by.values()) <= {"tuner0", "tuner1"}
  # Each worker's progress lines name the trials it ran, and together every trial once.
  reported = [l.split()[2] for w in workers for l in w.splitlines()
              if l.startswith("[tune] trial ")]
  assert sorted(reported) == [str(i) for i in range(TRIALS)]
  for i, worker in enumerate(workers):
    assert f"worker tuner{i}: the chief ended the search" in worker
    assert "best.gin" not in worker

  # The oracle's state agrees: every trial ended, none ongoing.
  with open(project / "oracle.json") as f:
    state = json.load(f)
  assert sorted(state["end_order"]) == [str(i) for i in range(TRIALS)]
  assert state["ongoing_trials"] == {}
  # The chief wrote the outputs, with the best trial's values.
  assert "oracle chief serving at" in chief and "reproduce it: leo-train" in chief
  assert (out / "best.gin").exists() and (out / "trials.csv").exists()
  with open(out / "trials.csv") as f:
    rows = f.read().splitlines()[1:]
  assert len(rows) == TRIALS and all(",COMPLETED," in r for r in rows)
