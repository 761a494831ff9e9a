"""What comes out of an end-to-end run (issue 25): leo-export's classify_images and
FewShotClassifier take images through the backbone the run meta-trained (its own
embeddings are that backbone's features), not the pre-trained one it started from, with
the weights of the checkpoint exported; leo-eval --compare meta-trains its ablations on
those embeddings too."""

import contextlib
import dataclasses
import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import leo_tf
from _tiny_images import write_tiny_folder
from helpers import TINY_SIZES, gin_bindings
from leo_tf import gin_config, saved_config
from leo_tf.analysis import compare
from leo_tf.backbone import inputs
from leo_tf.analysis.compare_config import CompareConfig
from leo_tf.data import images as images_lib
from leo_tf.leo.end_to_end import BACKBONE_VARIABLES, write_embeddings
from leo_tf.leo.run import open_run
from leo_tf.runtime.rundir import RunDir
from leo_tf.serving import export

STEPS = 6


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
  """A tiny end-to-end images experiment from nothing, as leo-train runs it (the gin
  parse, then run_experiment) in this process: pre-training of a WRN-10-1, its
  embeddings, STEPS end-to-end steps at a learning rate that moves the backbone, the
  test, and the closing comparison with the baselines."""
  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.experiment import run_experiment
  from leo_tf.leo.run import RunConfigs
  tmp = tmp_path_factory.mktemp("e2e_outputs")
  images, out = tmp / "pictures", str(tmp / "run")
  write_tiny_folder(str(images), split_dirs=True)
  bindings = [f"IMAGES_ROOT = {str(images)!r}", f"run_experiment.output_dir = {out!r}",
              *gin_bindings(
                  image_source=dict(image_size=16), build_wrn=dict(depth=10, width=1),
                  EmbeddingSource=dict(root=str(tmp / "data")),
                  PretrainConfig=dict(steps=2, steps_per_loop=2, batch_size=16,
                                      checkpoint_every=2, holdout_fraction=0.0),
                  LEOConfig=dict(**TINY_SIZES, inner_steps_train=1, inner_steps_test=1,
                                 finetune_steps_train=1, finetune_steps_test=1),
                  TrainConfig=dict(num_steps=STEPS, meta_batch_size=2, num_queries=2,
                                   val_num_queries=2, validate_every=STEPS,
                                   checkpoint_every=STEPS, log_every=STEPS,
                                   num_val_episodes=6, val_batch_size=6),
                  EvalConfig=dict(num_episodes=12, batch_size=12),
                  CompareConfig=dict(fit_episodes=6, logreg_steps=10, logreg_c_grid=[1.0]),
                  EndToEndConfig=dict(learning_rate=1e-2))]
  log = io.StringIO()
  with contextlib.redirect_stdout(log), gin_config.scoped(
      ["experiments/images_5way1shot.gin", "training/end_to_end.gin"], bindings):
    run_experiment(RunConfigs.from_gin())
  return dict(out=out, log=log.getvalue())


def _test_images(run_dir):
  """The run's test images (uint8 [n, H, W, C]) and labels, in the rows of its own test
  embeddings, and those embeddings (as the run loads them, L2-normalised)."""
  with gin_config.scoped(saved_config.saved_files(run_dir)):
    split = images_lib.image_source("test")
  batches = list(split.dataset.batch(1000).as_numpy_iterator())
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  run = open_run(run_dir, log=lambda _: None)
  data = run.load("test")
  np.testing.assert_array_equal(data.class_ids, labels)   # row for row
  return images, labels, data.embeddings


def _request(labels, per_class=(2, 1, 3), queries=4):
  """Support rows of 3 classes (``per_class`` of each, labels 0..2) and query rows."""
  support, query = [], []
  for new, c in enumerate(np.unique(labels)[:3]):
    rows = np.flatnonzero(labels == c)
    support += [(r, new) for r in rows[:per_class[new]]]
    query += list(rows[per_class[new]:per_class[new] + queries])
  rows, support_labels = zip(*support)
  return np.array(rows), np.array(support_labels, np.int64), np.array(query)


def _pretrained_backbone(run_dir):
  """The backbone the run started from (its source's, built with its embeddings)."""
  configs = open_run(run_dir, log=lambda _: None).configs
  return configs.end_to_end.backbone_file(configs.source)


def test_export_serves_images_through_the_meta_trained_backbone(e2e_run, tmp_path):
  run_dir = e2e_run["out"]
  images, labels, embeddings = _test_images(run_dir)
  support, support_labels, query = _request(labels)
  directory = export.export_checkpoint(run_dir, str(tmp_path / "export"), log=lambda _: None)
  signatures = tf.saved_model.load(directory).signatures
  served = lambda x: signatures[export.SERVING_DEFAULT](
      support_embeddings=tf.constant(x[support]), support_labels=tf.constant(support_labels),
      query_embeddings=tf.constant(x[query]))["probabilities"].numpy()
  on_images = signatures[export.IMAGES_SIGNATURE](
      support_images=tf.constant(images[support]), support_labels=tf.constant(support_labels),
      query_images=tf.constant(images[query]))["probabilities"].numpy()
  np.testing.assert_allclose(on_images, served(embeddings), atol=2e-5)
  # The backbone it started from computes other features, so other answers (far beyond
  # the tolerance above; the tiny model's answers are all near 1/3).
  pretrained = export.load_backbone(_pretrained_backbone(run_dir))
  features = pretrained(inputs.preprocess(tf.constant(images)), training=False).numpy()
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  assert np.abs(unit - embeddings).max() > 1e-2
  assert np.abs(served(features) - on_images).max() > 50 * 2e-5


def test_another_checkpoint_gets_its_own_backbone_and_embeddings(e2e_run, tmp_path):
  """RunDir.backbone and RunDir.embeddings are the tested checkpoint's; --which may open
  another, whose own backbone weights must come with it (export, the classifier) and
  whose embeddings are extracted anew (leo-eval): here the file's weights are made wrong."""
  import keras
  run_dir = tmp_path / "run"
  shutil.copytree(e2e_run["out"], run_dir)
  run = RunDir(run_dir)
  saved = keras.saving.load_model(run.backbone, compile=False)
  for v in saved.trainable_weights:
    v.assign(v + 1.0)
  os.remove(run.backbone)
  saved.save(run.backbone)
  with gin_config.scoped(saved_config.saved_files(run)):  # its embeddings made wrong too
    write_embeddings(saved, images_lib.image_source,
                     dataclasses.replace(open_run(run).configs.source, root=run.embeddings))
  log = []
  opened = open_run(run, log=log.append)
  backbone = opened.backbone()
  reader = tf.train.load_checkpoint(run.newest("best"))
  for v in backbone.weights:
    # Checkpoint keys escape the '.' of backbone_variables' names as '..'.
    key = f"{BACKBONE_VARIABLES}/{v.path.replace('/', '..')}/.ATTRIBUTES/VARIABLE_VALUE"
    np.testing.assert_array_equal(v.numpy(), reader.get_tensor(key), err_msg=v.path)
  # The run's embeddings/ are the wrong backbone's now: the checkpoint's are extracted,
  # and they are those the run was tested on.
  theirs = open_run(e2e_run["out"], log=lambda _: None).load("test")
  ours = opened.load("test")
  assert opened.source.root != run.embeddings and "is not of the best checkpoint" in log[-1]
  assert ours.keys.tolist() == theirs.keys.tolist()
  np.testing.assert_allclose(ours.embeddings, theirs.embeddings, atol=1e-6)
  # A run killed before it wrote them extracts them from the pre-trained backbone + weights.
  shutil.rmtree(run.embeddings)
  os.remove(run.backbone)
  killed = open_run(run, log=lambda _: None).load("test")
  np.testing.assert_allclose(killed.embeddings, theirs.embeddings, atol=1e-6)


def test_few_shot_classifier_takes_images_through_the_meta_trained_backbone(e2e_run):
  images, labels, embeddings = _test_images(e2e_run["out"])
  support, support_labels, query = _request(labels)
  classifier = leo_tf.FewShotClassifier(e2e_run["out"])
  on_images = classifier.fit(images[support], support_labels).predict_proba(images[query])
  on_embeddings = classifier.fit(embeddings[support], support_labels).predict_proba(
      embeddings[query])
  np.testing.assert_allclose(on_images, on_embeddings, atol=2e-5)


def test_the_comparison_runs_on_the_runs_own_embeddings(e2e_run, tmp_path):
  # leo-train's closing table (images experiments: run_experiment.after_test) ran.
  run = RunDir(e2e_run["out"])
  assert "Nearest class mean" in e2e_run["log"] and os.path.isdir(run.compare)
  # An ablation meta-trained for the comparison is LEO on the run's own embeddings, the
  # features the whole table is tested on, not an end-to-end run of its own.
  base = open_run(run, log=lambda _: None)
  cfg = CompareConfig(ablations=("deterministic",), ablation_train_steps=2, fit_episodes=6,
                      logreg_steps=20)
  result = compare.run_comparison(base, cfg, str(tmp_path / "compare"), log=lambda _: None,
                                  progress=False)
  assert [r.name for r in result.results][:2] == ["LEO", "LEO (deterministic)"]
  ablation = open_run(RunDir.ablation(str(tmp_path / "compare"), "deterministic"),
                      "latest", log=lambda _: None)
  assert not ablation.configs.end_to_end.enabled
  assert ablation.source.root == base.source.root == run.embeddings
