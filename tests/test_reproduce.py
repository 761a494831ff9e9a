"""leo-reproduce end to end on a tiny embeddings tree in the released layout, and its
table arithmetic by hand."""

import json
import math
import os
import pickle
import re
import subprocess

import numpy as np
import pytest

from helpers import ONE_STEP, TINY_TRAIN, gin_bindings, synthetic_embeddings
from leo_tf import reproduce
from leo_tf.data.embeddings import embeddings_path, save_embeddings
from leo_tf.runtime.rundir import RunDir

# Small enough for CI: 2 outer steps, 1 inner and 1 fine-tuning step, 20 test episodes.
SMALL = gin_bindings(TrainConfig=dict(TINY_TRAIN, num_val_episodes=10, val_batch_size=10),
                     EvalConfig=dict(num_episodes=20), LEOConfig=ONE_STEP)


def released_tree(root, datasets=("miniImageNet", "tieredImageNet")):
  """<root>/<dataset>/center/<split>_embeddings.pkl, protocol-2 pickles as released."""
  for d, dataset in enumerate(datasets):
    for s, split in enumerate(("train", "val", "test")):
      data = synthetic_embeddings(6, 10, dim=16, seed=10 * d + s, prefix=f"n0{s}")
      folder = os.path.join(root, dataset, "center")
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, f"{split}_embeddings.pkl"), "wb") as f:
        pickle.dump(dict(embeddings=data.embeddings, labels=data.class_ids,
                         keys=data.keys), f, protocol=2)
  return str(root)


def _leo_reproduce(*args):
  command = ["leo-reproduce", *args] + [f"--gin_bindings={b}" for b in SMALL]
  return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def test_leo_reproduce_runs_the_four_experiments_then_resumes_with_a_second_seed(tmp_path):
  root, out = released_tree(tmp_path / "emb"), str(tmp_path / "out")
  first = _leo_reproduce(f"--embeddings_root={root}", f"--output_dir={out}", "--steps=2")
  assert first.returncode == 0, first.stderr[-3000:]
  with open(os.path.join(out, "table.json")) as f:
    table = json.load(f)
  assert [r["experiment"] for r in table["rows"]] == list(reproduce.EXPERIMENTS)
  for row in table["rows"]:
    result = row["seeds"]["0"]
    assert 0.0 <= result["accuracy"] <= 100.0 and result["episodes"] == 20
    assert result["steps"] == 2 and row["mean"] == result["accuracy"]
    trainval = os.path.join(out, f"{row['experiment']}_trainval", "seed_0")
    assert os.path.exists(RunDir(trainval).best_record)   # still selected
  # Printed and written: ours beside the authors' code and the paper.
  for text in (first.stdout, open(os.path.join(out, "table.md")).read()):
    assert "| miniImageNet 1-shot | 2 |" in text
    for reference in ("61.89 ± 0.16", "77.65 ± 0.09", "66.25 ± 0.14", "81.77 ± 0.09",
                      "61.76 ± 0.08", "77.59 ± 0.12", "66.33 ± 0.05", "81.44 ± 0.09"):
      assert reference in text
  assert "the authors' protocol" in first.stdout and "not comparable" in first.stdout
  assert first.stdout.count("[train] step 2/2") == 4
  for row in table["rows"]:  # wall times, printed and recorded
    assert re.search(rf"\[reproduce\] {row['experiment']} seed 0: [\d.]+ ± [\d.]+ % in "
                     rf"{row['seeds']['0']['seconds']:.0f} s\n", first.stdout)
  assert re.search(r"wall time of its 4 timed runs \d+ s\n$", first.stdout)
  assert first.stdout.count(RELEASED_WARNING.format(rows="60 / 60 / 60")) == 1  # not twice

  second = _leo_reproduce(f"--embeddings_root={root}", f"--output_dir={out}", "--steps=2",
                          "--experiments=mini_1shot", "--seeds=0,1")
  assert second.returncode == 0, second.stderr[-3000:]
  assert re.search(r"mini_1shot seed 0: finished before, [\d.]+ ± [\d.]+ % in \d+ s \(",
                   second.stdout)
  assert second.stdout.count("[train] step 2/2") == 1                  # only seed 1 ran
  with open(os.path.join(out, "table.json")) as f:
    row, = json.load(f)["rows"]
  seed_means = [row["seeds"][s]["accuracy"] for s in ("0", "1")]
  assert row["seeds"]["0"]["accuracy"] == table["rows"][0]["seeds"]["0"]["accuracy"]
  assert row["mean"] == pytest.approx(np.mean(seed_means))
  assert row["ci95_over_seeds"] == pytest.approx(
      1.96 * np.std(seed_means, ddof=1) / math.sqrt(2))


RELEASED_WARNING = ("[reproduce] warning: miniImageNet/center has {rows} train / val / test "
                    "embeddings, the released ones 38400 / 9600 / 12000: these are not the "
                    "released embeddings, so the reference columns do not compare")


def test_embeddings_that_cannot_be_the_released_ones_are_warned_about_once(tmp_path):
  root = released_tree(tmp_path / "emb")
  logs = []
  reproduce.plan(root, str(tmp_path / "out"), ["mini_1shot", "mini_5shot", "tiered_1shot"],
                 [0, 1], "train", 2, log=logs.append)
  assert logs == [RELEASED_WARNING.format(rows="60 / 60 / 60")]  # tieredImageNet: unknown
  for split, classes in (("train", 64), ("val", 16), ("test", 20)):  # the released counts
    data = synthetic_embeddings(classes, 600, dim=4, seed=classes, prefix=split)
    save_embeddings(embeddings_path(root, "miniImageNet", "center", split), data.embeddings,
                    data.class_ids, data.keys)
  logs.clear()
  reproduce.plan(root, str(tmp_path / "out"), ["mini_1shot"], [0], "train", 2,
                 log=logs.append)
  assert not logs


@pytest.mark.parametrize("content, problem", [
    ("{not json", r"JSONDecodeError: Expecting property name enclosed in double quotes: "
                  r"line 1 column 2 \(char 1\)"),
    (b"\xff\xfe", r"UnicodeDecodeError: .*"),
    ("[1, 2]", "not a result with the numbers seed, steps, accuracy, episodes"),
    ('{"request": {}, "seed": 0, "steps": 2, "accuracy": "high", "episodes": 20}',
     "not a result with the numbers seed, steps, accuracy, episodes"),
    ('{"request": {}, "seed": 0, "steps": 2, "accuracy": 0.5, "episodes": 20, "ci95": "x"}',
     "not a result with the numbers seed, steps, accuracy, episodes"),
])
def test_a_damaged_result_is_one_error_naming_the_file(tmp_path, content, problem):
  run = reproduce.Run("mini_1shot", 0, [], [], str(tmp_path))
  path = RunDir(tmp_path).result
  with open(path, "wb") as f:
    f.write(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(reproduce.ReproduceError) as error:
    run.finished()
  assert re.fullmatch(rf"{re.escape(str(path))} is damaged \({problem}\); delete it and run "
                      r"again: the run resumes from its checkpoints and is only tested again",
                      str(error.value))


def test_table_json_is_strict_json_with_null_for_an_undefined_ci(tmp_path):
  """One seed has no CI over seeds: table.json held NaN, which strict readers refuse."""
  record = dict(experiment="mini_1shot", seed=0, accuracy=0.6, ci95=float("nan"),
                episodes=1, steps=2, run_dir="r0")
  paths = reproduce.write_table(reproduce.table([record], ["mini_1shot"], [0], "train"),
                                str(tmp_path))

  def refuse(constant):
    raise AssertionError(f"not strict JSON: {constant}")
  with open(paths["json"]) as f:
    row, = json.loads(f.read(), parse_constant=refuse)["rows"]
  assert row["ci95_over_seeds"] is None and row["seeds"]["0"]["ci95"] is None
  assert row["mean"] == row["seeds"]["0"]["accuracy"] == 60.0
  assert "| miniImageNet 1-shot | 2 | 60.00 | 60.00 |" in open(paths["markdown"]).read()


def test_a_missing_dataset_fails_before_training_and_names_the_folder(tmp_path):
  root = released_tree(tmp_path / "emb", datasets=("miniImageNet",))
  with pytest.raises(FileNotFoundError, match=r"tiered_1shot: no train, val, test "
                                              r"embeddings under .*tieredImageNet/center"):
    reproduce.plan(root, str(tmp_path / "out"), list(reproduce.EXPERIMENTS), [0],
                   "trainval", 2)
  runs = reproduce.plan(root, str(tmp_path / "out"), ["mini_1shot", "mini_5shot"], [3],
                        "train", 2)
  assert [r.gin_files for r in runs] == [["experiments/mini_final_1shot.gin"],
                                         ["experiments/mini_final_5shot.gin"]]
  assert "TrainConfig.seed = 3" in runs[0].bindings
  assert "TrainConfig.num_steps = 2" in runs[0].bindings


@pytest.mark.parametrize("args, message", [
    ((["imagenet_1shot"], [0], "trainval", None), "unknown experiment"),
    ((["mini_1shot"], [0, 0], "trainval", None), "distinct seeds"),
    ((["mini_1shot"], [0], "trainval", 0), "--steps"),
    ((["mini_1shot", "mini_5shot", "mini_1shot"], [0], "trainval", None),
     r"experiments \['mini_1shot', 'mini_5shot', 'mini_1shot'\]: give each experiment once"),
])
def test_bad_requests_are_refused(args, message):
  with pytest.raises(reproduce.ReproduceError, match=message):
    reproduce.check_request(*args)


def test_table_by_hand():
  records = [dict(experiment="mini_1shot", seed=s, accuracy=a, ci95=0.001, episodes=10,
                  steps=100000, run_dir=f"r{s}") for s, a in ((0, 0.60), (1, 0.62))]
  data = reproduce.table(records, ["mini_1shot", "tiered_5shot"], [0, 1], "trainval")
  mini, tiered = data["rows"]
  assert mini["mean"] == pytest.approx(61.0)
  assert mini["ci95_over_seeds"] == pytest.approx(1.96 * math.sqrt(2.0) / math.sqrt(2))
  assert tiered["mean"] is None and tiered["seeds"]["0"] is None
  text = reproduce.markdown(data)
  assert ("| miniImageNet 1-shot | 100000 | 60.00 ± 0.10 | 62.00 ± 0.10 | 61.00 ± 1.96 | "
          "61.89 ± 0.16 | 61.76 ± 0.08 |") in text
  assert "| tieredImageNet 5-shot | - | - | - | - | 81.77 ± 0.09 | 81.44 ± 0.09 |" in text
  assert "not comparable" not in text
