"""leo-train killed with SIGKILL at random moments resumes and ends where an
uninterrupted run ends, bit for bit; the CLIs report broken input in one line."""

import json
import os
import re
import subprocess

import gin
import numpy as np
import pytest

from _crash_campaign import (model_weights, newest_checkpoint, run_campaign,
                             write_experiment)
from helpers import synthetic_embeddings
from leo_tf import gin_config
from leo_tf.data.embeddings import embeddings_path, save_embeddings
from leo_tf.runtime.rundir import RunDir

STEPS = 40


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
  """Two SIGKILLed leo-train runs, then one to completion, in one output directory."""
  tmp = tmp_path_factory.mktemp("kills")
  gin_file = write_experiment(str(tmp), steps=STEPS, checkpoint_every=5, validate_every=10)
  out = str(tmp / "run")
  result = run_campaign(gin_file, out, kills=2, seed=1, max_delay=0.4)
  return dict(result, gin_file=gin_file, out=out, tmp=tmp)


def test_killed_run_resumes_and_reaches_the_final_step(campaign):
  assert campaign["final_returncode"] == 0, campaign["log"][-3000:]
  assert newest_checkpoint(RunDir(campaign["out"]).checkpoints("latest")) == STEPS
  resumed = len(re.findall(r"\[train\] resumed from", campaign["log"]))
  assert resumed >= 1 + sum(r["killed"] for r in campaign["records"][1:])
  assert "Traceback" not in campaign["log"]


def test_best_checkpoint_survives_and_matches_its_record(campaign):
  run = RunDir(campaign["out"])
  with open(run.best_record) as f:
    record = json.load(f)
  assert not os.path.exists(run.best_record + ".pending")
  assert newest_checkpoint(run.checkpoints("best")) == record["step"]


def test_resumed_weights_equal_an_uninterrupted_run(campaign, tmp_path):
  """Episodes and dropout are functions of (seed, step): kills change nothing."""
  reference = str(tmp_path / "reference")
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  try:
    gin_config.parse([campaign["gin_file"]], [f"run_experiment.output_dir = {reference!r}"])
    run_experiment(RunConfigs.from_gin(), log=lambda m: None)
  finally:
    gin.clear_config()
  ours, theirs = (model_weights(os.path.join(RunDir(run).checkpoints("latest"), f"ckpt-{STEPS}"))
                  for run in (campaign["out"], reference))
  assert ours.keys() == theirs.keys() and len(ours) >= 4
  for key in ours:
    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
  with open(RunDir(campaign["out"]).best_record) as a, \
       open(RunDir(reference).best_record) as b:
    assert json.load(a) == json.load(b)


def _run(args):
  proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stderr.strip().splitlines()


def test_leo_eval_with_embeddings_of_another_size_is_one_line(campaign, tmp_path):
  root = str(tmp_path / "emb")
  data = synthetic_embeddings(6, 6, dim=12, prefix="t")
  save_embeddings(embeddings_path(root, "tiny", "center", "test"), data.embeddings,
                  data.class_ids, data.keys)
  code, err = _run(["leo-eval", f"--checkpoint_dir={campaign['out']}",
                    f"--gin_bindings=EmbeddingSource.root = {root!r}"])
  assert code == 2
  assert not any("Traceback" in line for line in err)
  assert err[-1].startswith("error: checkpoint ")
  assert "trained on 8-dimensional embeddings; these have 12" in err[-1]
  assert "finetune_lr has shape (8,) in the checkpoint but (12,)" in err[-1]
