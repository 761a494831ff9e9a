"""The run directory (leo_tf/runtime/rundir.py)."""

import json
import os

import pytest

# ``run``: a tiny trained run, the fixture of test_hostile_runs.
from test_hostile_runs import run  # pylint: disable=unused-import
from leo_tf.runtime.rundir import RunDir


def test_the_layout_of_a_run(run):
  out = RunDir(run["out"])
  assert sorted(os.listdir(out)) == ["best", "config.gin", "latest", "operative_config.gin",
                                     "tensorboard"]
  assert out.best_record == os.path.join(out.checkpoints("best"), "best.json")
  assert json.load(open(out.best_record))["step"] in (5, 10)
  assert out.newest("latest") == os.path.join(run["out"], "latest", "ckpt-10")
  assert out.choose("best") == "best" and RunDir(out).path == run["out"]
  assert RunDir.ablation(out.compare, "maml").path == os.path.join(
      run["out"], "compare", "ablations", "maml")
  assert RunDir.trial("/s/trials/trial_3").tensorboard == "/s/trials/trial_3/leo/tensorboard"
  with pytest.raises(ValueError, match="which must be one of"):
    out.checkpoints("final")
