"""The run directory (leo_tf/runtime/rundir.py) and what issue 26 found in run
directories: paths TensorFlow cannot use, an unfinished first checkpoint write, a link
out of a run, a file where a folder belongs, a best record no accuracy can beat."""

import json
import os
import shutil

import pytest

# ``run``: a tiny trained run, the fixture of test_hostile_runs.
from test_hostile_runs import _error_line, _train, run, snapshot  # pylint: disable=unused-import
from leo_tf import checkpoints
from leo_tf.leo.run import open_run
from leo_tf.runtime.rundir import RunDir


def _copy(run, destination) -> RunDir:
  shutil.copytree(run["out"], destination)
  return RunDir(destination)


def _rerun(capsys, run, out):
  """The one error line of a rerun of ``out`` that would train 10 more steps."""
  return _error_line(capsys, lambda: _train(run["gin_file"], os.fspath(out),
                                            ["TrainConfig.num_steps = 20"]))


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


@pytest.mark.parametrize("name, shown", [("a[1]", "[ ]"), ("b\\c", "\\"), ("d*", "*"),
                                         ("e?", "?")])
def test_paths_tensorflow_reads_as_glob_patterns_are_refused_before_training(
    run, tmp_path, capsys, name, shown):
  """TF globs a checkpoint prefix: with '[' leo-train trained to the end, then said the
  run had no checkpoint, and every rerun called the intact checkpoints unreadable."""
  out = tmp_path / name
  why = (f"contains {shown}, which TensorFlow reads as a glob pattern in checkpoint paths; "
         "choose a directory without [ ] * ? \\")
  assert _rerun(capsys, run, out) == f"error: run_experiment.output_dir: {out} {why}"
  assert not out.exists()
  copy = shutil.copytree(run["out"], tmp_path / f"copy_{name}")  # renamed afterwards
  assert _error_line(capsys, lambda: open_run(copy)) == f"error: run directory: {copy} {why}"


def test_a_path_that_is_not_utf8_is_one_line(run, tmp_path, capsys):
  """A name in another locale's encoding (e.g. Latin-1 under LC_ALL=C) was a
  UnicodeEncodeError traceback from TensorFlow."""
  out = os.path.join(str(tmp_path), os.fsdecode(b"r\xfcn"))
  assert _rerun(capsys, run, out) == (
      f"error: run_experiment.output_dir: {tmp_path}/r\\xfcn is not a UTF-8 path, and "
      "TensorFlow opens files by UTF-8 names; rename it or choose another directory")


def test_an_unfinished_first_checkpoint_write_does_not_block_a_rerun(run, tmp_path):
  """A disk that filled up while TF wrote the first ckpt-N.index left it empty, and no
  state file: every rerun said 'no readable checkpoint ... move the directory away'."""
  out = RunDir(tmp_path / "run")
  os.makedirs(out.checkpoints("latest"))
  open(os.path.join(out.checkpoints("latest"), "ckpt-5.index"), "wb").close()
  logs = []
  _train(run["gin_file"], out.path, logs=logs)
  assert out.newest("latest") == os.path.join(out.checkpoints("latest"), "ckpt-10")
  assert [l for l in logs if l.startswith("warning")] == [
      f"warning: checkpoint {out.checkpoints('latest')}/ckpt-5 is unreadable (OpError: file "
      "is too short to be an sstable); its write never finished: ignoring it"]


def test_a_link_out_of_the_run_is_never_followed(run, tmp_path, capsys):
  """With latest/ a link to another folder, a rerun deleted *_temp folders there,
  overwrote its `checkpoint` file and wrote checkpoints into it."""
  out = _copy(run, tmp_path / "run")
  elsewhere = tmp_path / "elsewhere"
  shutil.move(out.checkpoints("latest"), elsewhere)
  for name in ("ckpt-3_temp", "notes_temp"):
    os.makedirs(elsewhere / name)
  os.symlink(elsewhere, out.checkpoints("latest"))
  before = snapshot(str(elsewhere))
  assert _rerun(capsys, run, out) == (
      f"error: run_experiment.output_dir: {out.checkpoints('latest')} is a link to "
      f"{os.path.realpath(elsewhere)}, outside the run directory; a run writes only into "
      "itself: replace the link with a folder")
  assert snapshot(str(elsewhere)) == before


def test_only_the_temporary_folders_tf_names_are_removed(tmp_path):
  for name in ("ckpt-7_temp", "notes_temp", "ckpt-x_temp", "target"):
    os.makedirs(tmp_path / name)
  os.symlink(tmp_path / "target", tmp_path / "ckpt-8_temp")
  open(tmp_path / "ckpt-9_temp", "w").close()
  assert checkpoints.remove_stale_temps(str(tmp_path), log=lambda _: None) == [
      str(tmp_path / "ckpt-7_temp")]
  assert sorted(os.listdir(tmp_path)) == ["ckpt-8_temp", "ckpt-9_temp", "ckpt-x_temp",
                                          "notes_temp", "target"]


def test_a_file_where_latest_belongs_is_one_line(run, tmp_path, capsys):
  out = _copy(run, tmp_path / "run")
  latest = out.checkpoints("latest")
  shutil.rmtree(latest)
  open(latest, "w").close()
  before = snapshot(out.path)
  assert _rerun(capsys, run, out) == (
      f"error: run_experiment.output_dir: {latest} is a file, not a folder; move it away "
      "(the run writes into that folder)")
  assert snapshot(out.path) == before


@pytest.mark.parametrize("accuracy", ['"NaN"', "NaN", "1.5", "-0.2"])
def test_a_best_record_no_validation_can_beat_is_refused(run, tmp_path, capsys, accuracy):
  """An accuracy of NaN was accepted silently: no validation is > NaN, so the run never
  kept a new best."""
  out = _copy(run, tmp_path / "run")
  with open(out.best_record, "w") as f:
    f.write(f'{{"step": 5, "accuracy": {accuracy}, "ci95": 0.1}}')
  value = float(json.loads(accuracy)) if accuracy.startswith('"') else float(accuracy)
  assert _rerun(capsys, run, out) == (
      f"error: {out.best_record} is unreadable (ValueError: accuracy {value} is not between "
      "0 and 1); restore it, or delete it and the next validation records a new best")
