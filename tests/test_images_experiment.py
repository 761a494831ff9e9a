"""Your own images, one command: a tiny generated image folder through the shipped
images experiment (pre-training, embeddings, meta-training, test, the comparison), in
both folder layouts, with small bindings; a second run reuses every stage.

The three runs are what ``leo-train --gin_file=experiments/images_5way1shot.gin
--gin_bindings="IMAGES_ROOT='...'" --output_dir=...`` runs (parse the gin, then
``run_experiment``), made in this process once for the module: one TensorFlow start and
one autograph conversion of each function for all three, instead of one per console
script (most of the time of a run this small)."""

import contextlib
import glob
import io
import json
import logging
import os
import re
import time
from unittest import mock

import numpy as np
import pytest

from _tiny_images import write_tiny_folder
from helpers import TINY_SIZES, gin_bindings
from leo_tf import gin_config
from leo_tf.data.source import EmbeddingSource

SMALL = gin_bindings(
    image_source=dict(image_size=16),
    build_wrn=dict(depth=10, width=1),
    PretrainConfig=dict(steps=2, steps_per_loop=2, batch_size=16, checkpoint_every=2,
                        holdout_fraction=0.0),
    LEOConfig=dict(**TINY_SIZES, inner_steps_train=1, inner_steps_test=1,
                   finetune_steps_train=1, finetune_steps_test=1),
    # The default 15 queries: the classes of 6-12 pictures give fewer, masked.
    TrainConfig=dict(num_steps=2, meta_batch_size=2, validate_every=2, checkpoint_every=2,
                     num_val_episodes=6, val_batch_size=6, log_every=1, num_queries=15,
                     val_num_queries=15),
    EvalConfig=dict(num_episodes=12, batch_size=12),
    CompareConfig=dict(fit_episodes=6, logreg_steps=10, logreg_c_grid=[1.0]))


@contextlib.contextmanager
def _captured():
  """Everything printed, and every warning logged (a line each, as in leo-train's
  output), into one text."""
  text, root = io.StringIO(), logging.getLogger()
  handler = logging.StreamHandler(text)
  root.addHandler(handler)
  try:
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
      yield text
  finally:
    root.removeHandler(handler)


def _leo_train(images_root, out, data_dir):
  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  bindings = [f"IMAGES_ROOT = '{images_root}'", f"run_experiment.output_dir = '{out}'", *SMALL]
  start = time.time()
  with mock.patch.dict(os.environ, LEO_TF_DATA=str(data_dir)), _captured() as text, (
      gin_config.scoped(["experiments/images_5way1shot.gin"], bindings)):
    run_experiment(RunConfigs.from_gin())
  print(f"leo-train took {time.time() - start:.1f} s")
  return text.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Per layout: the folder written, its run's output; and the split folders run again."""
  made = {}
  for layout in ("split_folders", "class_folders"):
    base = tmp_path_factory.mktemp(layout)
    root = base / "my_pictures"
    made[layout] = dict(base=base, root=root,
                        written=write_tiny_folder(str(root), split_dirs=layout == "split_folders"))
    made[layout]["out"] = _leo_train(root, base / "run", base / "data")
  again = made["split_folders"]
  again["again"] = _leo_train(again["root"], again["base"] / "run", again["base"] / "data")
  return made


@pytest.mark.parametrize("layout", ["split_folders", "class_folders"])
def test_a_folder_of_images_to_the_comparison_table(runs, layout):
  base, root, written, out = (runs[layout][k] for k in ("base", "root", "written", "out"))
  # One warning line names the corrupt file; the run goes on without it.
  named = [line for line in out.splitlines() if written["corrupt"] in line]
  assert len(named) == 1 and f"skipped: cannot decode image file {written['corrupt']}: " in (
      named[0])
  # The embeddings live in a folder of their own for this IMAGES_ROOT.
  data = glob.glob(str(base / "data" / "embeddings" / "images_my_pictures_*"))
  assert len(data) == 1 and re.fullmatch(r"images_my_pictures_[0-9a-f]{10}",
                                         os.path.basename(data[0]))
  assert sorted(os.listdir(os.path.join(data[0], "center"))) == [
      f"{s}_embeddings.pkl" for s in ("test", "train", "val")]
  # Which classes went where: the split folders, or a 64/16/20 draw of 30 classes.
  with open(os.path.join(data[0], "classes.json")) as f:
    classes = json.load(f)
  if layout == "split_folders":
    assert {s: sorted(classes[s]) for s in classes} == {
        s: sorted(os.listdir(root / s)) for s in ("train", "val", "test")}
  else:
    assert [len(classes[s]) for s in ("train", "val", "test")] == [19, 5, 6]
    assert sorted(sum(classes.values(), [])) == sorted(written["counts"])
  # It ends with LEO beside both baselines, paired differences, written to the run.
  table = (base / "run" / "compare" / "compare.md").read_text()
  for row in ("| LEO |", "| Nearest class mean |", "| Logistic regression |"):
    assert row in table and row in out
  assert "vs LEO, paired (pp)" in table and "over 12 episodes" in table


def test_a_second_run_reuses_every_stage(runs):
  again = runs["split_folders"]["again"]
  assert "[stage]" not in again and "[data] images_my_pictures_" in again  # files reused
  assert "[train] already at step 2 >= 2; nothing to do" in again
  assert "| Nearest class mean |" in again


def test_the_runs_classifier_takes_pictures_through_the_folders_backbone(runs):
  from leo_tf.serving.classifier import FewShotClassifier  # pylint: disable=import-outside-toplevel
  run = runs["class_folders"]["base"] / "run"
  classifier = FewShotClassifier(str(run))
  pictures = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 3), dtype=np.uint8)
  labels = np.array(["a", "b", "c", "d", "e"] * 2)
  predicted = classifier.fit(pictures, labels).predict(pictures)
  assert predicted.shape == (10,) and set(predicted) <= set(labels)


def test_images_root_is_the_one_binding_to_give():
  with pytest.raises(gin_config.GinConfigError) as error:
    gin_config.parse(["experiments/images_5way5shot.gin"])
  assert str(error.value) == (
      "IMAGES_ROOT is not bound: give it a value, e.g. --gin_bindings=\"IMAGES_ROOT='...'\" "
      "(a gin macro the files use)")


def test_two_image_folders_never_share_embeddings(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  folders = []
  for root in ("photos", str(tmp_path / "photos"), "other/photos"):
    gin_config.parse(["experiments/images_5way1shot.gin"], [f"IMAGES_ROOT = {root!r}"])
    folders.append(EmbeddingSource().folder)
  # A relative root means the same folder as its absolute path; another folder differs.
  assert folders[0] == folders[1] != folders[2]
  assert folders[0].startswith("images_photos_") and folders[2].startswith("images_photos_")
