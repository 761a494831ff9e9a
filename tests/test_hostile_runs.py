"""Hostile and careless runs (issue 16): a failed rerun leaves the run as it was, one
process per output directory, killed checkpoint writes tidied on resume."""

import hashlib
import os
import shutil
import subprocess

import gin
import pytest

from _crash_campaign import write_experiment
from leo_tf import checkpoints, gin_config, saved_config
from leo_tf.runtime import lock


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
    return run_experiment(log=(logs.append if logs is not None else lambda m: None))
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
  with open(os.path.join(run["out"], gin_config.CONFIG_FILE)) as f:
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
  stale = [os.path.join(run["out"], "latest", "ckpt-7_temp"),
           os.path.join(run["out"], "best", "ckpt-9_temp")]
  for path in stale:
    os.makedirs(path)
    with open(os.path.join(path, "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
      f.write(b"\0" * 100)
  keep = os.path.join(run["out"], "latest", "notes_temp.txt")  # a file, not a write
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
  path = os.path.join(out, gin_config.CONFIG_FILE)
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
      gin_config.parse_saved(str(tmp_path))
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
      gin_config.parse([f"experiments/{name}"])
      text = gin.config_str()
    finally:
      gin.clear_config()
    gin_config.register_configurables()
    saved_config.check(text, name)
