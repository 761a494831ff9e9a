"""leo-tune: search space parsing, a tiny search, resumption and the best .gin file."""

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import ONE_STEP, gin_bindings, synthetic_embeddings
from leo_tf import gin_config
from leo_tf.config_checks import ConfigError
from leo_tf.data.embeddings import embeddings_path, save_embeddings
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.runtime.rundir import RunDir
from leo_tf.tuning import hypermodel, search
from leo_tf.tuning.space import SearchSpaceError, TuneConfig, search_space

STEPS, EVERY = 8, 4  # two validations ("epochs") per trial

# A format string (for the root). 5-way (the default), otherwise the tiny model.
BASE_GIN = "\n".join([
    "EmbeddingSource.root = {root!r}", "EmbeddingSource.dataset = 'synthetic'",
    *gin_bindings(LEOConfig=dict(latent_size=4, relation_hidden=(8,), **ONE_STEP),
                  TrainConfig=dict(meta_batch_size=2, num_queries=3, val_num_queries=3,
                                   val_batch_size=10, num_steps=777)), ""])

SPACE_GIN = f"""
search_space.params = [
    ('TrainConfig.outer_lr', 'log', 1e-4, 1e-2),
    ('LEOConfig.dropout_rate', 'linear', 0.0, 0.5),
    ('LEOConfig.kl_weight', 'choice', [0.0, 0.01]),
]
TuneConfig.steps_per_trial = {STEPS}
TuneConfig.validate_every = {EVERY}
TuneConfig.num_val_episodes = 10
TuneConfig.seed = 3
"""


def write_config(directory):
  """Synthetic embeddings in the released layout and the gin files of a tiny search."""
  root = os.path.join(directory, "embeddings")
  for split, (classes, seed) in dict(train=(8, 1), val=(6, 2), test=(6, 3)).items():
    data = synthetic_embeddings(classes, 10, dim=8, seed=seed, prefix=split)
    save_embeddings(embeddings_path(root, "synthetic", "center", split), data.embeddings,
                    data.class_ids, data.keys)
  paths = {}
  for name, text in (("base.gin", BASE_GIN.format(root=root)), ("space.gin", SPACE_GIN)):
    paths[name] = os.path.join(directory, name)
    with open(paths[name], "w") as f:
      f.write(text)
  return paths


def setup_for(paths, output_dir, **overrides):
  return search.load_setup([paths["base.gin"]], ["LEOConfig.num_shots = 1"],
                           [paths["space.gin"]], output_dir=output_dir, **overrides)


class Interrupt(KeyboardInterrupt):
  pass


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
  """3 random trials, interrupted during the second one's first validation, then resumed.

  Records what the tuner's callbacks saw (keras-tuner calls Tuner.on_epoch_end from its
  TunerCallback) and the log lines of each run.
  """
  directory = str(tmp_path_factory.mktemp("tune"))
  paths = write_config(directory)
  out = os.path.join(directory, "out")
  epochs, logs, interrupt = [], {"first": [], "second": []}, ["1"]

  def on_epoch_end(self, trial, model, epoch, logs=None):
    """Records the epoch; in the first run, trial 1's first one (validated, its best
    checkpoint kept) is followed by an interrupt."""
    if trial.trial_id in interrupt:
      interrupt.clear()
      raise Interrupt()
    epochs.append((trial.trial_id, epoch, dict(logs)))

  mp = pytest.MonkeyPatch()
  mp.setattr(search.TUNER_CLASSES["random"], "on_epoch_end", on_epoch_end, raising=False)
  with pytest.raises(Interrupt):
    search.run_search(setup_for(paths, out, tuner="random", max_trials=3),
                      log=logs["first"].append)
  trial_0 = os.path.join(out, search.PROJECT, "trial_0", hypermodel.TRIAL_RECORD)
  mtime = os.path.getmtime(trial_0)
  result = search.run_search(setup_for(paths, out, tuner="random", max_trials=3),
                             log=logs["second"].append)
  mp.undo()
  yield dict(paths=paths, out=out, result=result, epochs=epochs, logs=logs,
             trial_0_unchanged=os.path.getmtime(trial_0) == mtime)


def progress_lines(lines):
  return [l for l in lines if l.startswith("[tune] trial ")]


def test_search_reports_each_validation_and_the_best_as_objective(tiny_search):
  rows = tiny_search["result"].rows
  assert [r["trial"] for r in rows] == ["0", "1", "2"]
  assert all(r["status"] == "COMPLETED" for r in rows)
  for row in rows:
    seen = [(e, logs["val_accuracy"]) for t, e, logs in tiny_search["epochs"]
            if t == row["trial"]]
    # Both validations of every completed run arrive as epochs 0 and 1.
    assert [e for e, _ in seen][-2:] == [0, 1]
    assert row["val_accuracy"] == pytest.approx(max(a for _, a in seen[-2:]))
    assert 0.0 < row["val_accuracy"] <= 1.0
    assert row["steps"] == STEPS
    assert 1e-4 <= row["TrainConfig.outer_lr"] <= 1e-2
    assert row["LEOConfig.kl_weight"] in (0.0, 0.01)
    trial_dir = os.path.join(tiny_search["out"], search.PROJECT, f"trial_{row['trial']}")
    # keras-tuner's best-epoch checkpoint is written by the callbacks we drive.
    assert os.path.exists(os.path.join(trial_dir, "checkpoint.weights.h5"))
  best = max(rows, key=lambda r: r["val_accuracy"])
  assert tiny_search["result"].best_trial == best["trial"]


def test_tables_are_saved_and_printed(tiny_search):
  out, result = tiny_search["out"], tiny_search["result"]
  with open(os.path.join(out, "trials.csv")) as f:
    table = list(csv.DictReader(f))
  assert [r["trial"] for r in table] == ["0", "1", "2"]
  for saved, row in zip(table, result.rows):
    assert float(saved["val_accuracy"]) == pytest.approx(row["val_accuracy"])
    assert float(saved["LEOConfig.dropout_rate"]) == pytest.approx(
        row["LEOConfig.dropout_rate"])
  with open(os.path.join(out, "trials.md")) as f:
    assert f.read().strip() == result.table
  assert result.table in tiny_search["logs"]["second"]
  assert len(result.table.splitlines()) == 2 + 3


def test_resumed_search_skips_finished_trials(tiny_search):
  first = progress_lines(tiny_search["logs"]["first"])
  second = progress_lines(tiny_search["logs"]["second"])
  assert [l.split()[2] for l in first] == ["0"]  # trial 1 was interrupted
  assert [l.split()[2] for l in second] == ["1", "2"]
  assert any("resuming" in l and "1 trial(s) finished" in l
             for l in tiny_search["logs"]["second"])
  assert tiny_search["trial_0_unchanged"]
  # Trial 0 trained once: its log has exactly its own two validations.
  log = os.path.join(tiny_search["out"], search.PROJECT, "trial_0", "train.log")
  with open(log) as f:
    assert sum(l.startswith("[validate]") for l in f) == 2


def _summaries(directory):
  """(tag, plugin name, plugin content bytes, simple value) of every summary below."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for path in tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        out.append((value.tag, value.metadata.plugin_data.plugin_name,
                    value.metadata.plugin_data.content, value.tensor))
  return out


def test_each_trial_is_an_hparams_session_with_its_values_and_objective(tiny_search):
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  project = os.path.join(tiny_search["out"], search.PROJECT)
  configs = [plugin_data_pb2.HParamsPluginData.FromString(c).experiment
             for _, name, c, _ in _summaries(project) if name == "hparams"]
  assert configs and sorted(h.name for h in configs[-1].hparam_infos) == [
      "LEOConfig.dropout_rate", "LEOConfig.kl_weight", "TrainConfig.outer_lr"]
  assert [m.name.tag for m in configs[-1].metric_infos] == ["tuning/val_accuracy",
                                                            "validation/accuracy"]
  for row in tiny_search["result"].rows:
    run = RunDir.trial(os.path.join(project, f"trial_{row['trial']}")).tensorboard
    summaries = _summaries(run)
    sessions = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info
                for _, name, c, _ in summaries if name == "hparams"]
    assert [s.group_name for s in sessions] == [f"trial_{row['trial']}"]
    logged = sessions[0].hparams
    assert logged["TrainConfig.outer_lr"].number_value == pytest.approx(
        row["TrainConfig.outer_lr"])
    assert logged["LEOConfig.kl_weight"].number_value == pytest.approx(
        row["LEOConfig.kl_weight"])
    objective = [tf.make_ndarray(t) for tag, _, _, t in summaries
                 if tag == "tuning/val_accuracy"]
    assert objective and float(objective[0]) == pytest.approx(row["val_accuracy"])
    assert any(tag == "validation/accuracy" for tag, *_ in summaries)


def test_the_saved_oracle_has_no_trial_left_running(tiny_search):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(tiny_search["out"], search.PROJECT, "oracle.json")) as f:
    state = json.load(f)
  assert sorted(state["end_order"]) == ["0", "1", "2"] and state["ongoing_trials"] == {}


def test_best_gin_reproduces_the_best_trial(tiny_search):
  result = tiny_search["result"]
  best = next(r for r in result.rows if r["trial"] == result.best_trial)
  gin_config.parse([result.best_gin])
  model, train = LEOConfig(), TrainConfig()
  assert train.outer_lr == best["TrainConfig.outer_lr"]
  assert model.dropout_rate == best["LEOConfig.dropout_rate"]
  assert model.kl_weight == best["LEOConfig.kl_weight"]
  assert (train.num_steps, train.validate_every, train.num_val_episodes) == (STEPS, EVERY, 10)
  assert model.num_shots == 1 and model.latent_size == 4  # command line and base file
  import gin
  assert gin.query_parameter("run_experiment.output_dir").endswith("best_run")
  # best_full.gin: the same values with the base config's own budget.
  gin_config.parse([result.best_full_gin])
  assert TrainConfig().num_steps == 777
  assert TrainConfig().outer_lr == best["TrainConfig.outer_lr"]


def test_resume_with_another_space_is_refused(tiny_search, tmp_path):
  space = tmp_path / "other.gin"
  space.write_text("search_space.params = [('TrainConfig.outer_lr', 'log', 1e-5, 1e-3)]\n"
                   + SPACE_GIN.split("]\n", 1)[1])
  setup = search.load_setup([tiny_search["paths"]["base.gin"]], ["LEOConfig.num_shots = 1"],
                            [str(space)], output_dir=tiny_search["out"], tuner="random")
  with pytest.raises(search.TuningError, match="other gin files, search space;"):
    search.run_search(setup)


@pytest.mark.parametrize("entry, message", [
    (("LEOConfig.no_such_weight", "log", 1e-3, 1.0), "unknown binding.*no_such_weight"),
    (("NoSuchConfig.kl_weight", "log", 1e-3, 1.0), "unknown binding.*NoSuchConfig"),
    (("LEOConfig.kl_weight", "log", 1.0, 1e-3), r"low \(1.0\) must be below high"),
    (("LEOConfig.kl_weight", "linear", 0.5, 0.5), "must be below high"),
    (("LEOConfig.kl_weight", "log", 0.0, 1.0), "'log' range needs positive bounds"),
    (("LEOConfig.kl_weight", "log", -1.0, 1.0), "'log' range needs positive bounds"),
    (("LEOConfig.kl_weight", "exp", 0.1, 1.0), "unknown scale 'exp'"),
    (("LEOConfig.kl_weight", "log", 0.1), "is \\(binding, 'log', low, high\\)"),
    (("LEOConfig.kl_weight", "linear", "a", 1.0), "must be numbers"),
    (("LEOConfig.inner_steps_train", "int", 1, 4.5), "needs integer bounds"),
    (("LEOConfig.num_shots", "choice", []), "choices is empty"),
    (("LEOConfig.num_shots", "choice", [1, "5"]), "must all be ints"),
    (("LEOConfig.num_shots", "choice", 5), "is \\(binding, 'choice', \\[values"),
    (("dropout", "linear", 0.0, 0.5), "must be a binding"),
    ("LEOConfig.kl_weight", "an entry is"),
])
def test_malformed_entries_are_rejected_clearly(entry, message):
  gin_config.register_configurables()
  with pytest.raises(SearchSpaceError, match=message):
    search_space([("TrainConfig.outer_lr", "log", 1e-5, 1e-3), entry])


def test_space_level_errors():
  gin_config.register_configurables()
  with pytest.raises(SearchSpaceError, match="empty"):
    search_space([])
  with pytest.raises(SearchSpaceError, match="more than once"):
    search_space([("LEOConfig.kl_weight", "log", 1e-3, 1.0),
                  ("LEOConfig.kl_weight", "linear", 0.0, 1.0)])


@pytest.mark.parametrize("entry, message", [
    ("('LEOConfig.dropout_rate', 'linear', 0.0, 1.0)",
     r"dropout_rate.*value 1.0 is invalid.*\[0, 1\)"),
    ("('LEOConfig.latent_size', 'int', 4, 1000000000)",
     r"latent_size.*value 1000000000 is invalid: LEOConfig.latent_size = 1000000000 makes a "
     r"model of .* weights"),
])
def test_values_invalid_for_leo_fail_before_the_search(tmp_path, entry, message):
  paths = write_config(str(tmp_path))
  space = tmp_path / "bad.gin"
  space.write_text(f"search_space.params = [{entry}]\n")
  setup = search.load_setup([paths["base.gin"]], [], [str(space)],
                            output_dir=str(tmp_path / "out"))
  with pytest.raises(SearchSpaceError, match=message):
    search.run_search(setup)
  assert not os.path.exists(tmp_path / "out")


def test_default_space_covers_the_tuned_hyperparameters(tmp_path):
  paths = write_config(str(tmp_path))
  setup = search.load_setup([paths["base.gin"]], tuner="hyperband", max_trials=7)
  bindings = {p.binding: p for p in setup.space.params}
  assert set(bindings) >= {"TrainConfig.outer_lr", "LEOConfig.dropout_rate",
                           "LEOConfig.kl_weight", "LEOConfig.encoder_penalty_weight",
                           "LEOConfig.l2_weight", "LEOConfig.orthogonality_weight"}
  assert bindings["TrainConfig.outer_lr"].scale == "log"
  assert (setup.tune.tuner, setup.tune.max_trials) == ("hyperband", 7)  # flags win
  setup.check_extremes()  # every range end is a valid LEO config


def test_bad_tune_config_and_missing_base(tmp_path):
  paths = write_config(str(tmp_path))
  with pytest.raises(ConfigError, match="multiple of"):
    TuneConfig(steps_per_trial=10, validate_every=4)
  with pytest.raises(ConfigError, match="TuneConfig.steps_per_trial must be an integer"):
    TuneConfig(steps_per_trial="2000")  # a quoted gin value
  with pytest.raises(ConfigError, match="TuneConfig.tuner"):
    setup_for(paths, str(tmp_path), tuner="grid")
  with pytest.raises(search.TuningError, match="--gin_file"):
    search.load_setup([])


def test_hyperband_continues_a_trial_from_its_parent_weights(tmp_path):
  paths = write_config(str(tmp_path))
  weights = {}  # trial -> (weights when training starts, weights when it ends)
  original = hypermodel.MetaTrainer.train

  def recording_train(self):
    trial = os.path.basename(os.path.dirname(self.run.path))
    start = [w.copy() for w in self.model.get_weights()]
    model = original(self)
    weights[trial] = (start, [w.copy() for w in model.get_weights()])
    return model

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(hypermodel.MetaTrainer, "train", recording_train)
    result = search.run_search(setup_for(paths, str(tmp_path / "out"), tuner="hyperband",
                                         max_trials=3, hyperband_factor=2))
  rows = {r["trial"]: r for r in result.rows}
  child = next(r for r in rows.values() if r["continues"])
  parent = rows[child["continues"]]
  assert (parent["steps"], child["steps"]) == (EVERY, 2 * EVERY)
  assert child["TrainConfig.outer_lr"] == parent["TrainConfig.outer_lr"]
  # The child starts where its parent's best (and only) epoch ended, and trains on.
  parent_end = weights[f"trial_{parent['trial']}"][1]
  child_start, child_end = weights[f"trial_{child['trial']}"]
  assert all(np.array_equal(a, b) for a, b in zip(parent_end, child_start))
  assert not all(np.array_equal(a, b) for a, b in zip(child_start, child_end))
  with open(os.path.join(tmp_path, "out", search.PROJECT, f"trial_{child['trial']}",
                         "train.log")) as f:
    assert f"[train] step {EVERY}/{EVERY}" in f.read()  # only the remaining epoch
  gin_config.parse([result.best_gin])
  best = rows[result.best_trial]
  assert TrainConfig().num_steps == best["steps"]


def test_failed_trials_are_one_line_each_and_keep_their_traceback(tmp_path, capfd):
  """A trial whose values fail (a ConfigError inside training) is reported in one line,
  without keras-tuner's traceback on stderr; error.txt keeps it; three in a row stop the
  search with one error."""
  paths = write_config(str(tmp_path))

  def failing_train(self):
    raise ConfigError("LEOConfig.kl_weight: a value this trial cannot use")

  lines = []
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(hypermodel.MetaTrainer, "train", failing_train)
    with pytest.raises(search.TuningError, match=r"stopped after 3 failed trials in a row; "
                       r"the last: ConfigError: LEOConfig.kl_weight: a value"):
      search.run_search(setup_for(paths, str(tmp_path / "out"), tuner="random",
                                  max_trials=5), log=lines.append)
  failed = progress_lines(lines)
  assert len(failed) == 3 and all(
      "FAILED: ConfigError: LEOConfig.kl_weight: a value this trial cannot use" in line
      for line in failed), failed
  assert "Traceback" not in capfd.readouterr().err
  with open(os.path.join(tmp_path, "out", search.PROJECT, "trial_0", "error.txt")) as f:
    assert "Traceback" in f.read()


_VERBOSITY_PROBE = """
import sys
from absl import flags, logging
from leo_tf.cli import tune
flags.FLAGS(["leo-tune", *sys.argv[1:]])
tune.quiet_tensorflow()
print(logging.get_verbosity())
"""


@pytest.mark.parametrize("args, verbosity", [([], -1), (["--verbosity=1"], 1), (["-v=0"], 0)])
def test_leo_tune_is_quiet_unless_a_verbosity_is_asked_for(args, verbosity):
  """One line per trial by default (absl WARNING = -1); -v / --verbosity wins."""
  out = subprocess.run([sys.executable, "-c", _VERBOSITY_PROBE, *args], capture_output=True,
                       text=True, check=True).stdout
  assert int(out.strip().splitlines()[-1]) == verbosity


def _leo_tune(*args):
  return subprocess.run([os.path.join(os.path.dirname(sys.executable), "leo-tune"),
                         "--gin_file=experiments/glyphs_5way1shot.gin", *args],
                        capture_output=True, text=True, timeout=300)


def test_oracle_address_out_of_range_or_busy_is_one_line_before_anything_starts(tmp_path):
  """Port 99999 was accepted (a worker then waited); a busy port was a gRPC traceback."""
  out = f"--output_dir={tmp_path / 'tune'}"
  proc = _leo_tune("--tuner_id=tuner0", "--oracle=127.0.0.1:99999", out)
  assert (proc.returncode, proc.stderr.splitlines()) == (2, [
      "error: the oracle's port must be 1..65535, got '99999' (--oracle=host:port or "
      "KERASTUNER_ORACLE_PORT)"])
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = _leo_tune("--tuner_id=chief", f"--oracle=127.0.0.1:{port}", out)
  assert (proc.returncode, proc.stderr.splitlines()) == (2, [
      f"error: the oracle chief cannot serve at 127.0.0.1:{port}: Address already in use "
      "(choose a free port of this machine)"])
  assert not os.path.exists(tmp_path / "tune")


def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
  """It was keras-tuner's 'File exists' traceback."""
  from leo_tf.cli import common  # pylint: disable=import-outside-toplevel
  paths = write_config(str(tmp_path))
  path = tmp_path / "file"
  path.write_text("")
  with pytest.raises(SystemExit):
    common.run_guarded(lambda: search.run_search(setup_for(paths, str(path))))
  assert capsys.readouterr().err == (
      f"error: TuneConfig.output_dir: {path} is a file, not a directory\n")
