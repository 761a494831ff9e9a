"""Baselines, confidence intervals, ensembles, the comparison table and the t-SNE figure."""

import csv
import io
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import TINY_LEO, gin_bindings, random_episode, synthetic_embeddings
from leo_tf import gin_config, saved_config
from leo_tf.analysis import ablations, baselines, compare, compare_config, ensemble, methods, tsne
from leo_tf.analysis.progress import ProgressBar
from leo_tf.data.embeddings import embeddings_path, save_embeddings
from leo_tf.data.episodes import EpisodeSampler
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.evaluation import EvalResult, evaluate
from leo_tf.leo.model import build_leo, episode_accuracy
from leo_tf.leo.run import open_run
from leo_tf.runtime.rundir import RunDir

# ------------------------------------------------------------------ metrics by hand


def test_ci95_by_hand():
  result = EvalResult(np.array([0.0, 1.0, 0.0, 1.0]))
  # sample std (ddof 1) of 0,1,0,1 = sqrt(1/3); half-width 1.96 * std / sqrt(4).
  assert result.mean == 0.5
  assert result.ci95 == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)


def test_paired_difference_uses_per_episode_differences():
  a = EvalResult(np.array([0.8, 0.6, 0.9]))
  b = EvalResult(np.array([0.7, 0.5, 0.8]))
  mean, ci = methods.paired_difference(a, b)
  assert mean == pytest.approx(0.1)
  assert ci == pytest.approx(0.0, abs=1e-12)  # a constant gap is certain, however noisy a is


class _Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bar_redraws_on_a_terminal_and_summarises_elsewhere(monkeypatch, terminal):
  """Off a terminal (a log, a pipe) it was one line per 10%: 77 lines per comparison."""
  monkeypatch.setattr(sys, "stderr", _Terminal() if terminal else io.StringIO())
  bar = ProgressBar(100, "LEO", "episodes")
  for _ in range(50):
    bar(None, 2)
  out = sys.stderr.getvalue()
  if terminal:
    assert out.count("\r") == 50 and out.count("\n") == 1 and out.endswith("s)\n")
    assert out.split("\r")[-1].startswith("[LEO] |" + "#" * 30 + "| 100/100 episodes (")
  else:
    assert re.fullmatch(r"\[LEO\] 100 episodes in \d+ s \(\d+/s\)\n", out)


def test_ncm_logits_on_a_constructed_episode():
  # 2-way 2-shot in 2-d: class means (1, 0) and (0, 3).
  support = tf.constant([[[[0.0, 0.0], [2.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]]])
  # Query (1, 1): squared distances 1 and 5. Query (0.2, 1.6) is nearer the
  # shot (0, 2) of class 1 but nearer the MEAN of class 0 (0.64+2.56=3.2 vs 0.04+1.96=2.0).
  query = tf.constant([[[[1.0, 1.0]], [[0.2, 1.6]]]])
  logits = baselines.ncm_logits(support, query, temperature=0.5).numpy()
  np.testing.assert_allclose(logits[0, 0, 0], [-1 / 0.5, -5 / 0.5], rtol=1e-6)
  np.testing.assert_allclose(logits[0, 1, 0], [-(0.64 + 2.56) / 0.5, -(0.04 + 1.96) / 0.5],
                             rtol=1e-5)
  mask = np.ones((1, 2, 1))
  assert episode_accuracy(logits, mask)[0] == 1.0


def _separable_episode():
  rng = np.random.default_rng(3)
  centers = np.eye(3, 4) * 3.0
  support = centers[:, None, :] + 0.3 * rng.normal(size=(3, 2, 4))     # [N, K, d]
  query = centers[:, None, :] + 0.3 * rng.normal(size=(3, 5, 4))
  return support.astype(np.float32)[None], query.astype(np.float32)[None]


def test_logistic_regression_separable_episode_matches_sklearn():
  from sklearn.linear_model import LogisticRegression
  support, query = _separable_episode()
  logits = baselines.logistic_regression_logits(support, query, c=1.0, steps=500).numpy()
  assert episode_accuracy(logits, np.ones((1, 3, 5)))[0] == 1.0
  x = support[0].reshape(-1, 4)
  y = np.repeat(np.arange(3), 2)
  reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x, y)
  expected = reference.predict_proba(query[0].reshape(-1, 4)).reshape(3, 5, 3)
  np.testing.assert_allclose(methods.softmax(logits)[0], expected, atol=2e-4)


def test_logistic_regression_is_batched_per_episode():
  support, query = _separable_episode()
  swapped = support[:, ::-1]  # the same points with class labels reversed
  both = baselines.logistic_regression_logits(
      np.concatenate([support, swapped]), np.concatenate([query, query]), 1.0, 300).numpy()
  one = baselines.logistic_regression_logits(swapped, query, 1.0, 300).numpy()
  np.testing.assert_allclose(both[1], one[0], rtol=1e-4, atol=1e-5)
  # Reversed labels: classes 0 and 2 swap, class 1 (a third of the queries) keeps its own.
  np.testing.assert_allclose(episode_accuracy(both, np.ones((2, 3, 5))), [1.0, 1 / 3])


def test_fit_temperature_recovers_the_calibrated_scale():
  # 2 classes, every query has margin ln 3 for class 0; 3 of 4 are right. The NLL-optimal
  # probability of the predicted class is 3/4 = sigmoid(ln 3 / T), i.e. T = 1.
  logits = np.zeros((1, 2, 2, 2))
  logits[..., 0] = math.log(3.0)
  mask = np.array([[[1.0, 1.0], [1.0, 1.0]]])
  logits[0, 1, 1] = [0.0, math.log(3.0)]  # class 1 query: right
  logits[0, 1, 0] = [math.log(3.0), 0.0]  # class 1 query: wrong
  # queries of class 0 (both right) and class 1 (one right, one wrong): 3 of 4 right.
  assert baselines.fit_temperature(logits, mask) == pytest.approx(1.0)


# ------------------------------------------------------------------ ensembles


def _tiny_model(stochastic=True, initialisation="encoder"):
  config = LEOConfig(num_classes=3, num_shots=2, latent_size=4, relation_hidden=(6,),
                     inner_steps_test=2, finetune_steps_test=1, stochastic=stochastic,
                     initialisation=initialisation, dropout_rate=0.0)
  return build_leo(config, dim=8)


def _episode(b=2, n=3, k=2, q=4, d=8, seed=0):
  episode = random_episode(b, n, k, q, d, seed, unit=False, joint=False)
  return episode["support"], episode["query"]


def test_ensemble_equals_the_mean_of_separately_adapted_samples():
  model = _tiny_model()
  support, query = _episode()
  seed = tf.constant([1, 2], tf.int64)
  got = tf.exp(ensemble.ensemble_logits(model, support, query, 3, seed)).numpy()
  latents = model.sample_latents(support, 3, seed)    # [S, B, N, z]
  probs = []
  for s in range(3):  # adapt each sample on its own, as a plain evaluation pass would
    _, w = model.adapt_latents(support, latents[s][:, :, None], False)
    w, _ = model.finetune(support, w, False)
    probs.append(tf.nn.softmax(model.logits(query, w)).numpy())
  np.testing.assert_allclose(got, np.mean(probs, axis=0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_ensemble_with_a_collapsed_posterior_is_the_mean_prediction():
  model = _tiny_model()
  support, query = _episode()
  kernel = model.encoder.relation.kernels[-1] if hasattr(model.encoder, "relation") else None
  del kernel
  # Push u = -inf-ish: stddev = exp(u) - 1 + offset floors at 1e-10 with offset 0.
  samples = model.sample_latents(support, 4, tf.constant([0, 1], tf.int64))
  mean = model.adapt(support, training=False)["initial_latents"][:, :, 0]
  spread = float(tf.reduce_max(tf.abs(samples - mean[None])))
  plain = tf.nn.softmax(model(dict(support=support, query=query))["logits"]).numpy()
  got = tf.exp(ensemble.ensemble_logits(model, support, query, 4,
                                        tf.constant([0, 1], tf.int64))).numpy()
  if spread < 1e-6:  # the untrained encoder already has (near) zero stddev
    np.testing.assert_allclose(got, plain, rtol=1e-4, atol=1e-6)
  else:
    assert not np.allclose(got, plain, atol=1e-6)


def test_no_ensemble_without_a_latent_distribution():
  for model in (_tiny_model(stochastic=False), _tiny_model(initialisation="maml")):
    assert not ensemble.can_ensemble(model)
    assert methods.ensemble_method(model, 5, seed=0) is None
  assert methods.ensemble_method(_tiny_model(), 1, seed=0) is None
  assert methods.ensemble_method(_tiny_model(), 5, seed=0)[0] == "LEO, ensemble of 5"


def test_random_prior_ensemble_samples_standard_normal_codes():
  model = _tiny_model(initialisation="random_prior")
  support, _ = _episode(b=50)
  z = model.sample_latents(support, 20, tf.constant([3, 4], tf.int64))
  assert z.shape == (20, 50, 3, 4)
  assert abs(float(tf.reduce_mean(z))) < 0.05
  assert float(tf.math.reduce_std(z)) == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------ a tiny trained run


BASE_BINDINGS = [
    "EmbeddingSource.dataset = 'synth'",
    *gin_bindings(LEOConfig=dict(TINY_LEO, num_shots=1, inner_steps_train=2,
                                 inner_steps_test=2)),
    "TrainConfig.outer_lr = 0.01",
    "TrainConfig.meta_batch_size = 4", "TrainConfig.num_queries = 3",
    "TrainConfig.num_steps = 24", "TrainConfig.validate_every = 24",
    "TrainConfig.num_val_episodes = 20", "TrainConfig.val_batch_size = 20",
    "TrainConfig.val_num_queries = 5", "TrainConfig.log_every = 24",
    "EvalConfig.num_episodes = 30", "EvalConfig.num_queries = 5", "EvalConfig.batch_size = 20",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  tmp = tmp_path_factory.mktemp("analysis")
  root = str(tmp / "embeddings")
  for i, split in enumerate(("train", "val", "test")):
    s = synthetic_embeddings(10, 12, dim=16, seed=10 + i, prefix=f"{split}x")
    save_embeddings(embeddings_path(root, "synth", "center", split), s.embeddings,
                    s.class_ids, s.keys)
  gin_config.parse([], BASE_BINDINGS + [f"EmbeddingSource.root = {root!r}"])
  run_dir = str(tmp / "base")
  run_experiment(RunConfigs.from_gin(), output_dir=run_dir, evaluate_test=False,
                 log=lambda _: None)
  return run_dir, root


def test_ablation_dirs_given_missing_and_unknown(trained_run):
  from leo_tf.leo.config import ConfigError
  run_dir, _ = trained_run
  logs = []
  cfg = compare_config.CompareConfig(ablations=("deterministic", "maml"), ablation_train_steps=0)
  dirs = ablations.resolve_ablation_dirs("base", cfg, {"maml": run_dir}, "out", [], [],
                                         logs.append)
  assert dirs == {"maml": run_dir}
  assert len(logs) == 1 and "LEO (deterministic) left out" in logs[0]
  with pytest.raises(ConfigError, match="unknown ablation"):
    ablations.resolve_ablation_dirs("base", cfg, {"mamll": "x"}, "out", [], [], logs.append)
  with pytest.raises(ConfigError, match="unknown methods"):
    compare_config.CompareConfig(baselines=("knn",))


def test_a_given_ablation_run_is_checked_before_any_ablation_trains(trained_run, tmp_path):
  """--compare_dirs=maml=<missing> failed only after the other ablations had trained."""
  from leo_tf.leo.config import ConfigError
  run_dir, _ = trained_run
  no_checkpoint = tmp_path / "no_checkpoint"
  no_checkpoint.mkdir()
  shutil.copy(os.path.join(run_dir, "config.gin"), no_checkpoint)
  cfg = compare_config.CompareConfig(ablations=("deterministic", "maml"), ablation_train_steps=5)
  missing = str(tmp_path / "missing")
  for given, reason in ((missing, f"{missing} has no config.gin: is it a leo-train output "
                         "directory?"),
                        (str(no_checkpoint), f"{no_checkpoint} has no checkpoint in best/ or "
                         "latest/")):
    with pytest.raises(ConfigError) as error:
      ablations.resolve_ablation_dirs(run_dir, cfg, {"maml": given}, str(tmp_path / "out"),
                                      [], [], print)
    assert str(error.value) == f"--compare_dirs=maml={given}: {reason}"
  assert not os.path.exists(tmp_path / "out")  # nothing meta-trained


def test_compare_table_on_a_tiny_trained_model(trained_run, tmp_path):
  run_dir, root = trained_run
  logs = []
  bindings = ["CompareConfig.ablations = ['maml']", "CompareConfig.ablation_train_steps = 8",
              "CompareConfig.ensemble_samples = 3", "CompareConfig.fit_episodes = 20",
              "CompareConfig.logreg_c_grid = [1.0, 10.0]"]
  result = compare.run_comparison(
      open_run(run_dir, bindings=bindings, fallback=True),
      saved_config.read_saved(run_dir, compare_config.CompareConfig, bindings),
      str(tmp_path / "cmp"),
      bindings=bindings, log=logs.append, progress=False)
  names = [r["method"] for r in result.rows]
  assert names == ["LEO", "LEO, ensemble of 3", "MAML (same features)",
                   "Nearest class mean", "Logistic regression"]
  # The LEO row is the standard evaluation of the checkpoint on the same episodes.
  run = open_run(run_dir)
  reference = evaluate(run.model,
                       EpisodeSampler(run.load("test"), 3, 1, 5), 30, 20, seed=20260)
  np.testing.assert_allclose(result.results[0].accuracy.accuracies, reference.accuracies)
  for r, row in zip(result.results, result.rows):
    assert r.accuracy.accuracies.shape == (30,)
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0 and row["nll"] > 0
    if row["method"] != "LEO":  # paired difference on identical episodes
      assert row["delta_vs_leo"] == pytest.approx(
          row["accuracy"] - result.rows[0]["accuracy"], abs=1e-6)
  assert RunDir.ablation(tmp_path / "cmp", "maml").newest("best")
  assert any("temperature" in line for line in logs)
  with open(result.paths["csv"]) as f:
    table = list(csv.DictReader(f))
  assert [t["method"] for t in table] == names
  assert float(table[3]["accuracy"]) == pytest.approx(result.rows[3]["accuracy"])
  with open(result.paths["markdown"]) as f:
    assert "| Nearest class mean |" in f.read()
  assert os.path.getsize(result.paths["reliability"]) > 5000


def test_compare_cli_meta_trains_ablations_with_the_runs_threads(trained_run, tmp_path):
  """leo-eval --compare sets the run's thread pools before TensorFlow starts: its ablations
  logged "[threads] TensorFlow already started ..." and trained with TF's default pools.
  Off a terminal each method's progress is one summary line (it was one per 10%)."""
  run_dir, _ = trained_run
  proc = subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), "leo-eval"), f"--checkpoint_dir={run_dir}",
       "--compare", "--compare_train_steps=2", f"--compare_output={tmp_path}",
       "--gin_bindings=CompareConfig.ablations = ['maml']",
       "--gin_bindings=CompareConfig.baselines = []"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert "[threads]" not in proc.stdout + proc.stderr
  assert "not a valid node name" not in proc.stderr  # TF's warning on a traced "_" argument
  assert "| LEO |" in proc.stdout and "| MAML (same features) |" in proc.stdout
  summaries = re.findall(r"^\[(.*)\] 30 episodes in \d+ s \(\d+/s\)$", proc.stderr, re.M)
  assert summaries == ["LEO", "MAML (same features)"] and "|#" not in proc.stderr


def test_latent_tsne_png(trained_run, tmp_path):
  run_dir, _ = trained_run
  run = open_run(run_dir)
  model, val = run.model, run.load("val")
  codes = tsne.collect_latents(model, EpisodeSampler(val, 3, 1, 1), 12, 6, seed=0,
                               progress=False)
  assert codes.initial.shape == (36, 4) and codes.final.shape == (36, 4)
  assert codes.classes.shape == (36,) and codes.classes.max() < 10
  assert not np.allclose(codes.initial, codes.final)  # adaptation moved the codes
  points = tsne.embed_tsne(codes, perplexity=5, verbose=0, max_iter=250)
  assert points.shape == (72, 2)
  path = tsne.plot_latent_tsne(points, codes, str(tmp_path / "tsne.png"),
                               class_names=val.class_names)
  assert os.path.getsize(path) > 5000


def test_leo_visualize_draws_the_figure(trained_run, tmp_path):
  """The command end to end (a rebase once left it naming a variable it no longer set)."""
  run_dir, _ = trained_run
  output = tmp_path / "tsne.png"
  proc = subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), "leo-visualize"),
       f"--checkpoint_dir={run_dir}", "--num_tasks=6", "--batch_size=4", "--perplexity=3",
       f"--output={output}"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.endswith(f"[tsne] wrote {output}\n") and os.path.getsize(output) > 5000
  assert re.search(r"^\[latents\] 6 tasks in \d+ s \(\d+/s\)$", proc.stderr, re.M)


def teardown_module():
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()  # trained_run parsed the tiny run's bindings


@pytest.mark.parametrize("shots, hidden", [(1, ()), (5, (256,))])
def test_paper_variant_row_takes_the_papers_model_for_the_shots(shots, hidden):
  with gin_config.scoped([compare_config.ABLATION_GIN["paper"].format(shots=shots)]):
    c = LEOConfig()
  assert c.use_relation_net is False and c.encoder_hidden == hidden
  assert (c.inner_steps_train, c.inner_steps_test, c.finetune_steps_test) == (3, 6, 0)


def test_paper_variant_row_is_meta_trained_from_the_base_run(trained_run, tmp_path):
  run_dir, _ = trained_run
  out = ablations.train_ablation(run_dir, "paper", str(tmp_path), 4, [], [],
                               lambda _: None, shots=1)
  with gin_config.scoped(saved_config.saved_files(out)):
    c = LEOConfig()
  assert c.use_relation_net is False and c.num_classes == 3  # the paper's model, the base task
  assert RunDir(out).newest("latest")
