"""What an installed leo_tf needs: shipped gin files found from anywhere, data paths
under $LEO_TF_DATA made absolute, quiet console scripts with --version."""

import glob
import importlib.metadata
import importlib.resources
import os
import platform
import subprocess
import sys

import gin
import pytest

from leo_tf import gin_config
from leo_tf.runtime import paths, quiet_start

REPO_GIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def _relative_gin_files(root):
  return sorted(os.path.relpath(p, root)
                for p in glob.glob(os.path.join(root, "**", "*.gin"), recursive=True))


def test_gin_files_are_package_data():
  shipped = importlib.resources.files("leo_tf") / "gin"
  assert gin_config.GIN_DIR == str(shipped)
  assert _relative_gin_files(gin_config.GIN_DIR) == _relative_gin_files(REPO_GIN)
  assert len(_relative_gin_files(REPO_GIN)) > 30


def test_resolve_expands_the_data_directory(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("LEO_TF_DATA", "/srv/leo")
  assert paths.resolve("$LEO_TF_DATA/embeddings") == "/srv/leo/embeddings"
  assert paths.resolve("${LEO_TF_DATA}/tfds") == "/srv/leo/tfds"
  assert paths.resolve("emb") == str(tmp_path / "emb")
  assert paths.resolve("gs://bucket/emb") == "gs://bucket/emb"
  monkeypatch.setenv("LEO_TF_DATA", "rel")  # a relative setting is taken from the cwd
  assert paths.resolve("$LEO_TF_DATA/x") == str(tmp_path / "rel" / "x")
  monkeypatch.delenv("LEO_TF_DATA")
  monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
  assert paths.resolve("$LEO_TF_DATA/x") == "/cache/leo_tf/x"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert paths.data_dir() == str(tmp_path / "home" / ".cache" / "leo_tf")


def test_parse_from_any_folder_binds_absolute_paths(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("LEO_TF_DATA", str(tmp_path / "data"))
  try:
    gin_config.parse(["experiments/mini_final_1shot.gin"])
    assert gin.query_parameter("EmbeddingSource.root") == str(tmp_path / "data" / "embeddings")
    assert gin.query_parameter("run_experiment.output_dir") == str(
        tmp_path / "runs" / "mini_final_1shot")
    gin_config.parse(["experiments/glyphs_5way1shot.gin"],
                     ["EmbeddingSource.root = 'mine'", "run_experiment.output_dir = '~/r'"])
    assert gin.query_parameter("EmbeddingSource.root") == str(tmp_path / "mine")
    assert gin.query_parameter("image_source.root") == str(tmp_path / "data" / "tfds")
    assert gin.query_parameter("run_experiment.output_dir") == os.path.expanduser("~/r")
    # What a run saves names the files by absolute path.
    saved = " ".join(gin.config_str().replace("\\\n", " ").split())
    assert f"EmbeddingSource.root = '{tmp_path / 'mine'}'" in saved
  finally:
    gin.clear_config()


def test_embedding_source_default_root_is_under_the_data_directory(monkeypatch, tmp_path):
  from leo_tf.data.source import EmbeddingSource  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("LEO_TF_DATA", str(tmp_path))
  assert EmbeddingSource().root == str(tmp_path / "embeddings")


def test_own_gin_file_includes_shipped_building_blocks(monkeypatch, tmp_path):
  mine = tmp_path / "mine.gin"
  mine.write_text("include 'models/leo_final.gin'\ninclude 'tasks/5way5shot.gin'\n"
                  "LEOConfig.latent_size = 16\n")
  monkeypatch.chdir(tmp_path.parent)
  try:
    gin_config.parse([str(mine)])
    assert gin.query_parameter("LEOConfig.num_shots") == 5
    assert gin.query_parameter("LEOConfig.use_relation_net") is True
    assert gin.query_parameter("LEOConfig.latent_size") == 16
  finally:
    gin.clear_config()


# What the tensorflow wheel printed on this 2-core CPU machine when it loaded.
CPU_START = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796117526.119261    7696 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "E0000 00:00:1796117535.162882    7696 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
# What it printed there with TF_ENABLE_ONEDNN_OPTS=1 (a CPU where oneDNN is on by default):
# when it loaded, and at some op of training or evaluation.
ONEDNN = [
    "I0000 00:00:1796384480.617009    4304 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors "
    "from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.\n",
    "E0000 00:00:1796384643.518857    7070 util.cc:131] oneDNN supports DT_BOOL only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if "
    "present.\n",
]
REAL_ERROR = "E0000 00:00:17.0 1 some_kernel.cc:12] a real TensorFlow error\n"


def test_noise_is_only_the_cpu_machine_lines():
  ours = ["[data] miniImageNet/center: train 160 x 640\n", REAL_ERROR]
  assert quiet_start.noise(CPU_START + ONEDNN + ours) == CPU_START + ONEDNN
  # With CUDA drivers present, a cuInit failure is a real problem and is kept.
  assert quiet_start.noise([CPU_START[0], CPU_START[2]]) == [CPU_START[0]]
  # oneDNN's fallback note for another type (bfloat16 asked for) is not noise.
  assert quiet_start.noise([ONEDNN[1].replace("DT_BOOL", "DT_BFLOAT16")]) == []


def test_noise_written_after_start_up_is_filtered_too():
  """TensorFlow writes oneDNN's DT_BOOL note at some op long after start-up; it is dropped
  like the start-up lines, while a real error and Python's own lines pass."""
  script = ("import os, sys\n"
            "from leo_tf.runtime.quiet_start import start_tensorflow\n"
            "start_tensorflow()\n"
            f"os.write(2, {(ONEDNN[1] + REAL_ERROR).encode()!r})\n"
            "print('ours', file=sys.stderr)\n")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=_env(TF_ENABLE_ONEDNN_OPTS="1"), check=True)
  assert sorted(proc.stderr.splitlines(keepends=True)) == sorted([REAL_ERROR, "ours\n"])


def _console_scripts():
  return sorted(ep.name for ep in importlib.metadata.entry_points(group="console_scripts")
                if ep.value.startswith("leo_tf."))


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(extra)
  return env


def test_every_console_script_prints_versions():
  scripts = _console_scripts()
  assert {"leo-train", "leo-eval", "leo-export"} <= set(scripts)
  bin_dir = os.path.dirname(sys.executable)
  for script in scripts:
    out = subprocess.run([os.path.join(bin_dir, script), "--version"], capture_output=True,
                         text=True, env=_env(), check=True).stdout
    assert out == (f"leo_tf {importlib.metadata.version('leo_tf')}, "
                   f"TensorFlow {importlib.metadata.version('tensorflow')}, "
                   f"TensorFlow Probability {importlib.metadata.version('tensorflow-probability')}, "
                   f"Keras {importlib.metadata.version('keras')}\n"), script


@pytest.mark.parametrize("args, line", [
    (["leo-eval", "--nosuchflag"],
     "error: Unknown command line flag 'nosuchflag' (--help lists the flags)"),
    (["leo-eval", "--which=foo"],
     "error: flag --which=foo: value should be one of <best|latest> (--help lists the flags)"),
    (["leo-train", "--version=1"],
     "error: --version=1: --version takes no value (it prints the versions)"),
])
def test_flag_errors_are_one_line_with_exit_code_2(args, line):
  """As every other error (absl's own were two lines, exit 1)."""
  script = os.path.join(os.path.dirname(sys.executable), args[0])
  proc = subprocess.run([script, *args[1:]], capture_output=True, text=True, env=_env())
  assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (2, "", [line])


def test_readme_commands_table_lists_every_console_script():
  """One table, not cut by a paragraph: its rows are the lines right after its header."""
  readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
  section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0].strip()
  table = section.split("\n\n", 1)[0].splitlines()
  assert table[:2] == ["| command | what it does |", "|---|---|"]
  for script in _console_scripts():
    assert any(row.startswith(f"| `{script}") or f"`{script}`" in row for row in table), script


def test_help_lists_the_scripts_own_flags():
  out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "leo-train"), "--help"],
                       capture_output=True, text=True, env=_env()).stdout
  for flag in ("--gin_file", "--gin_bindings", "--output_dir", "--[no]version", "--verbosity"):
    assert flag in out, flag


def test_eval_help_names_every_ablation():
  """--compare_dirs' help named 3 of the 5 ablations; it lists CompareConfig's names now."""
  out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "leo-eval"), "--help"],
                       capture_output=True, text=True, env=_env()).stdout
  assert "names: paper, deterministic, random_prior, maml, maml_original." in " ".join(
      out.split())


@pytest.mark.parametrize("onednn", ["0", "1"])  # 1: as on a CPU where TF enables oneDNN
def test_console_script_starts_quietly(tmp_path, onednn):
  leo_eval = os.path.join(os.path.dirname(sys.executable), "leo-eval")
  args = [leo_eval, f"--checkpoint_dir={tmp_path}"]
  quiet = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path,
                         env=_env(TF_ENABLE_ONEDNN_OPTS=onednn))
  assert quiet.returncode == 2
  assert quiet.stdout == ""
  assert quiet.stderr.splitlines() == [
      f"error: {tmp_path} has no config.gin: is it a leo-train output directory?"]
  # --verbosity=1 shows TensorFlow's own lines: at least the quiet run's, and its
  # start-up lines wherever the wheel prints them (this CPU machine does).
  for extra, level in (["--verbosity=1"], {}), ([], dict(TF_CPP_MIN_LOG_LEVEL="0")):
    env = _env(TF_ENABLE_ONEDNN_OPTS=onednn, **level)
    loud = subprocess.run(args + extra, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert loud.returncode == 2 and loud.stderr.endswith(quiet.stderr), extra
    if not os.path.exists("/dev/nvidiactl"):  # the wheel's CUDA probe, not filtered
      assert "Could not find cuda drivers" in loud.stderr, extra
    if platform.machine() == "x86_64":  # the x86 wheel has oneDNN
      assert ("oneDNN custom operations are on" in loud.stderr) == (onednn == "1"), extra
