"""Hostile and careless runs (issue 16): a failed rerun leaves the run as it was, one
process per output directory, killed checkpoint writes tidied on resume."""

import hashlib
import os
import pickle
import re
import shutil
import subprocess

import gin
import pytest

from _crash_campaign import write_experiment
from leo_tf import checkpoints, gin_config, saved_config
from leo_tf.cli import common
from leo_tf.leo.run import RunConfigs
from leo_tf.runtime import lock
from leo_tf.runtime.rundir import RunDir


def snapshot(directory):
  """Every path below ``directory`` with its kind, size, content hash and mtime."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      info = os.lstat(path)
      digest = (hashlib.sha256(open(path, "rb").read()).hexdigest()
                if os.path.isfile(path) else None)
      out[os.path.relpath(path, directory)] = (info.st_mode, info.st_size, info.st_mtime_ns,
                                               digest)
  return out


def _train(gin_file, out, bindings=(), logs=None):
  from leo_tf.leo.experiment import run_experiment  # pylint: disable=import-outside-toplevel
  try:
    gin_config.parse([gin_file], [f"run_experiment.output_dir = {out!r}", *bindings])
    return run_experiment(RunConfigs.from_gin(),
                          log=(logs.append if logs is not None else lambda m: None))
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("run")
  gin_file = write_experiment(str(tmp), steps=10, checkpoint_every=5, validate_every=5)
  out = str(tmp / "run")
  _train(gin_file, out)
  return dict(gin_file=gin_file, out=out)


def test_failed_rerun_leaves_the_run_directory_exactly_as_it_was(run):
  """Another latent_size: CheckpointMismatchError before config.gin (or tensorboard/,
  or best.json) is touched, so leo-eval/leo-export still read the intact run."""
  before = snapshot(run["out"])
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"latent_size|shape \(4,\) in the checkpoint but \(6,\)"):
    _train(run["gin_file"], run["out"], ["LEOConfig.latent_size = 6"])
  assert snapshot(run["out"]) == before
  with open(RunDir(run["out"]).config) as f:
    assert "LEOConfig.latent_size = 4" in f.read()


def test_second_process_on_a_busy_run_directory_is_refused(run):
  before = snapshot(run["out"])
  with lock.hold(run["out"]):
    with pytest.raises(lock.RunDirectoryBusyError,
                       match=f"{run['out']} is in use by another leo-train"):
      _train(run["gin_file"], run["out"])
    proc = subprocess.run(["leo-train", f"--gin_file={run['gin_file']}",
                           f"--output_dir={run['out']}"],
                          capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: {run['out']} is in use by another leo-train (it holds the directory's "
      "lock): wait for it to finish, or give another output directory")
  assert "Traceback" not in proc.stderr
  assert snapshot(run["out"]) == before
  with lock.hold(run["out"]):  # released by the refused processes and by the block
    pass


def test_stale_temp_folders_of_killed_checkpoint_writes_are_removed_on_resume(run):
  """TF writes ckpt-N_temp/ and renames its files out; a SIGKILL in between left the
  folder there forever."""
  stale = [os.path.join(RunDir(run["out"]).checkpoints(kind), name)
           for kind, name in (("latest", "ckpt-7_temp"), ("best", "ckpt-9_temp"))]
  for path in stale:
    os.makedirs(path)
    with open(os.path.join(path, "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
      f.write(b"\0" * 100)
  keep = os.path.join(RunDir(run["out"]).checkpoints("latest"), "notes_temp.txt")  # a file
  open(keep, "w").close()
  logs = []
  _train(run["gin_file"], run["out"], logs=logs)
  assert not any(os.path.exists(p) for p in stale)
  assert os.path.exists(keep)
  assert "[train] removed 1 unfinished checkpoint write(s): ckpt-7_temp" in logs
  assert "[train] removed 1 unfinished checkpoint write(s): ckpt-9_temp" in logs
  os.remove(keep)


# ------------------------------------------------------------------ saved configs are data

PAYLOAD = """from __gin__ import dynamic_registration
import os
os.system.command = 'touch {marker}'
LEOConfig.latent_size = @os.system()
"""


def _hostile_copy(run, tmp_path, header):
  """A copy of the run whose config.gin starts with ``header``."""
  out = str(tmp_path / "downloaded")
  shutil.copytree(run["out"], out)
  path = RunDir(out).config
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(header + text)
  return out


@pytest.mark.parametrize("command", ["leo-eval", "leo-export", "leo-visualize"])
def test_saved_config_that_runs_code_is_refused_before_anything_runs(run, tmp_path, command):
  """gin's dynamic registration made `@os.system()` a call: a downloaded run executed
  commands, exited 0 and leo-export copied the payload into the SavedModel."""
  marker = tmp_path / "pwned"
  out = _hostile_copy(run, tmp_path, PAYLOAD.format(marker=marker))
  base = tmp_path / "models"
  args = [command, f"--checkpoint_dir={out}"] + (
      [f"--export_base={base}"] if command == "leo-export" else [])
  proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: {out}/config.gin, line 1: a saved run config may import only leo_tf's own "
      "modules (`from __gin__ import dynamic_registration`); refusing to read it, nothing "
      "in it ran")
  assert "Traceback" not in proc.stderr
  assert not marker.exists() and not base.exists()


@pytest.mark.parametrize("header, line, message", [
    ("import os\n", 1, r"may import only leo_tf's own modules \(`import os`\)"),
    ("import leo_tf.data.glyphs as g\n", 1, "may import only leo_tf's own modules"),
    ("\n\nos.system.command = 'ls'\n", 3, "'os.system' is not one of leo_tf's configurables"),
    ("EmbeddingSource.builder = @run_experiment()\n", 1,
     r"may not call anything \(`@run_experiment\(\)`\)"),
    ("EmbeddingSource.builder = @print\n", 1, "'@print' is not one of leo_tf's configurables"),
    ("include 'experiments/glyphs_5way1shot.gin'\n", 1, "may not include other files"),
    ("LEOConfig.latent_size = (\n", 2, "syntax error"),
])
def test_saved_config_allow_list(tmp_path, header, line, message):
  path = str(tmp_path / "config.gin")
  with open(path, "w") as f:
    f.write(header)
  try:
    with pytest.raises(saved_config.UnsafeConfigError, match=rf"config.gin, line {line}: .*{message}"):
      saved_config.read_saved(str(tmp_path), lambda: None)
  finally:
    gin.clear_config()


def test_saved_configs_of_every_shipped_experiment_are_accepted(tmp_path):
  """What gin.config_str() writes for a run (imports of leo_tf modules, macros,
  @build_glyph_embeddings) passes; the same file as --gin_file is trusted."""
  gin_dir = gin_config.GIN_DIR
  experiments = sorted(os.listdir(os.path.join(gin_dir, "experiments")))
  assert len(experiments) >= 5
  for name in experiments:
    try:
      gin_config.parse([f"experiments/{name}"], ["IMAGES_ROOT = '/images'"])  # images_*
      text = gin.config_str()
    finally:
      gin.clear_config()
    gin_config.register_configurables()
    saved_config.check(text, name)


# ------------------------------------------------------------------ one error line each


def _error_line(capsys, fn):
  """What the CLIs' one error path prints for ``fn()``: exactly one `error:` line."""
  with pytest.raises(SystemExit) as info:
    common.run_guarded(fn)
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: "), err
  assert "In call to configurable" not in err and "0x7f" not in err
  return err.strip()


def _train_guarded(capsys, gin_file, out, *bindings):
  return _error_line(capsys, lambda: _train(gin_file, str(out), bindings))


@pytest.mark.parametrize("binding, line", [
    ("LEOConfig.latent_size = 'abc'", "error: LEOConfig.latent_size must be an integer, got 'abc'"),
    ("TrainConfig.num_steps = 10.5", "error: TrainConfig.num_steps must be an integer, got 10.5"),
    ("EvalConfig.num_episodes = 0", "error: EvalConfig.num_episodes must be >= 1, got 0"),
    ("EvalConfig.batch_size = 0", "error: EvalConfig.batch_size must be >= 1, got 0"),
    ("LEOConfig.relation_hidden = [8, 'x']",
     "error: LEOConfig.relation_hidden must be a list of integers, got [8, 'x']"),
    ("Threads.inter_op = -5", "error: Threads.inter_op must be >= -1, got -5"),
    ("Threads.intra_op = 'x'", "error: Threads.intra_op must be an integer, got 'x'"),
])
def test_bad_values_name_the_parameter(run, tmp_path, capsys, binding, line):
  assert _train_guarded(capsys, run["gin_file"], tmp_path / "new", binding) == line
  assert not os.path.exists(RunDir(tmp_path / "new").config)


def test_a_model_too_big_for_the_machine_is_one_line_before_any_work(run, tmp_path, capsys,
                                                                     monkeypatch):
  from leo_tf.leo import config  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.run import open_run  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(config, "MACHINE_MEMORY", 8 * 2**30)
  big = "LEOConfig.relation_hidden = [100000, 100000]"
  line = _train_guarded(capsys, run["gin_file"], tmp_path / "new", big)
  assert re.fullmatch(r"error: LEOConfig.relation_hidden = \(100000, 100000\) makes a model "
                      r"of 1e\+10 weights: meta-training needs 149.\d GB for them \(weights, "
                      r"gradients, Adam's moments\), more than 50% of this machine's 8.0 GB; "
                      r"use smaller sizes", line)
  assert not os.path.exists(tmp_path / "new")
  saved = tmp_path / "saved"  # the same binding in a run's config.gin
  shutil.copytree(run["out"], saved)
  with open(RunDir(saved).config, "a") as f:
    f.write(f"\n{big}\n")
  assert _error_line(capsys, lambda: open_run(str(saved), log=lambda _: None)) == line


def test_output_dir_that_is_a_file(run, tmp_path, capsys):
  path = tmp_path / "file"
  path.write_text("x")
  assert _train_guarded(capsys, run["gin_file"], path) == (
      f"error: run_experiment.output_dir: {path} is a file, not a directory")


def test_output_dir_bound_to_none(run, tmp_path, capsys):
  assert _train_guarded(capsys, run["gin_file"], tmp_path / "new",
                        "run_experiment.output_dir = None") == (
      "error: run_experiment.output_dir: expected a directory path, got None")


def _no_images(split):
  raise AssertionError(f"the {split} images were read before the output path was checked")


@pytest.mark.parametrize("stage, kwargs, line", [
    ("run_pretraining", dict(model_dir=None),
     "error: run_pretraining.model_dir: expected a directory path, got None"),
    ("run_extraction", dict(model_dir="/nonexistent", root=None, dataset="glyphs"),
     "error: run_extraction.root: expected a directory path, got None"),
])
def test_backbone_stage_paths_bound_to_none(capsys, stage, kwargs, line):
  from leo_tf.backbone import pipeline  # pylint: disable=import-outside-toplevel
  stage_fn = getattr(pipeline, stage)
  assert _error_line(capsys, lambda: stage_fn(image_source=_no_images, log=print,
                                              **kwargs)) == line


def test_corrupt_best_record_fails_before_training_naming_the_file(run, tmp_path, capsys):
  """A damaged best.json used to be a ValueError blamed on 'the types of its gin
  bindings', and only after all of training; a record without 'accuracy' a bare KeyError."""
  out = str(tmp_path / "copy")
  shutil.copytree(run["out"], out)
  best = RunDir(out).best_record
  for text, why in (("{not json", "JSONDecodeError: Expecting property name"),
                    ('{"step": 5}', "KeyError: 'accuracy'")):
    with open(best, "w") as f:
      f.write(text)
    before = snapshot(out)
    line = _train_guarded(capsys, run["gin_file"], out, "TrainConfig.num_steps = 20")
    assert line.startswith(f"error: {best} is unreadable ({why}")
    assert line.endswith("restore it, or delete it and the next validation records a new best")
    assert snapshot(out) == before  # nothing trained, nothing written


def test_ragged_embeddings_are_a_data_error(tmp_path, capsys):
  raw = {"embeddings": [[0.0, 1.0], [1.0]], "labels": [0, 1], "keys": ["0-a-x", "1-b-y"]}
  path = tmp_path / "ragged.pkl"
  path.write_bytes(pickle.dumps(raw, protocol=2))
  from leo_tf.data import embeddings  # pylint: disable=import-outside-toplevel
  assert _error_line(capsys, lambda: embeddings.load_embeddings(str(path))) == (
      f"error: {path}: 'embeddings' must be a numpy array, found list")


def test_errors_not_caused_by_gin_are_not_blamed_on_it(capsys):
  def bug():
    raise ValueError("an internal bug\n  In call to configurable 'run_experiment' "
                     "(<function run_experiment at 0x7f0000000000>)")
  with pytest.raises(ValueError, match="an internal bug"):  # a traceback: ours to fix
    common.run_guarded(bug)
  assert capsys.readouterr().err == ""


def test_full_disk_and_read_only_output_are_one_line(run, tmp_path):
  """leo-train into a 64 KiB and a read-only tmpfs (a private mount namespace)."""
  if shutil.which("unshare") is None or subprocess.run(
      ["unshare", "-rm", "true"], capture_output=True).returncode:
    pytest.skip("needs unshare -rm (user and mount namespaces)")
  mount = tmp_path / "mnt"
  mount.mkdir()
  for setup, expected in (
      (f"mount -t tmpfs -o size=64k tmpfs {mount}",
       "No space left on device (free some space and run again: leo-train resumes from its "
       "last checkpoint)"),
      (f"mount -t tmpfs tmpfs {mount} && mkdir {mount}/run && mount -o remount,ro {mount}",
       f"error: run_experiment.output_dir: cannot write to {mount}/run: it is on a "
       "read-only file system")):
    script = (f"{setup} && exec leo-train --gin_file={run['gin_file']} "
              f"--output_dir={mount}/run --gin_bindings='TrainConfig.num_steps = 2000' "
              "--gin_bindings='TrainConfig.checkpoint_every = 1'")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: ") and lines[-1].endswith(expected), lines[-1]
    assert "function_node" not in lines[-1] and "[Op:" not in lines[-1]


@pytest.mark.parametrize("command, flag", [
    ("leo-train", "--output_dir"), ("leo-eval", "--checkpoint_dir"),
    ("leo-export", "--export_base"), ("leo-visualize", "--perplexity"),
])
def test_help_lists_the_commands_own_flags(command, flag):
  proc = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
  assert proc.returncode in (0, 1)  # absl's --help exits with 1
  assert f"  {flag}:" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, line", [
    (["--batch_size=0"], "error: --batch_size must be >= 1, got 0"),
    (["--perplexity=-5"], "error: --perplexity must be > 0, got -5"),
])
def test_visualize_flags_are_checked_first(run, args, line):
  proc = subprocess.run(["leo-visualize", f"--checkpoint_dir={run['out']}", *args],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == line


def test_visualize_output_path_is_checked_before_any_work(run, tmp_path):
  out = tmp_path / "a_directory"
  out.mkdir()
  proc = subprocess.run(["leo-visualize", f"--checkpoint_dir={run['out']}",
                         f"--output={out}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --output: {out} is a directory, not a file")
  assert "[tsne]" not in proc.stdout


def test_export_base_that_is_a_file(run, tmp_path):
  base = tmp_path / "base"
  base.write_text("x")
  proc = subprocess.run(["leo-export", f"--checkpoint_dir={run['out']}",
                         f"--export_base={base}"], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --export_base: {base} is a file, not a directory")
