"""leo_tf.FewShotClassifier: fit adapts once on any support set, predict classifies; the
same answers from a run directory and from its export, equal to the in-process model on
the padded support set; scikit-learn's conventions and errors; the README's example."""

import os
import re

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import leo_tf
from helpers import synthetic_embeddings
from leo_tf import gin_config
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.leo.trainer import MetaTrainer
from leo_tf.runtime.rundir import RunDir
from leo_tf.serving import export
from leo_tf.serving.classifier import NotFittedError

DIM = 16
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")
BINDINGS = ["LEOConfig.num_classes = 3", "LEOConfig.num_shots = 2", "LEOConfig.latent_size = 8",
            "LEOConfig.relation_hidden = [12]", "LEOConfig.inner_steps_test = 2",
            "LEOConfig.finetune_steps_test = 2", "LEOConfig.finetune_lr_init = 0.3"]


def make_run(run_dir):
  """A leo-train run directory with perturbed (not trained) weights; returns the model."""
  gin_config.parse([], BINDINGS)
  gin_config.save_config(RunDir(run_dir).config)
  config = LEOConfig()
  gin.clear_config()
  trainer = MetaTrainer(config, TrainConfig(num_steps=1), synthetic_embeddings(6, 20, dim=DIM),
                        None, run_dir, log=lambda _: None)
  rng = np.random.default_rng(3)
  for v in trainer.model.variables:
    v.assign(v * rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))
  trainer.best.save(checkpoint_number=1)
  return trainer.model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("classifier")
  run_dir = str(root / "runs" / "mini1")
  model = make_run(run_dir)
  try:
    path = export.export_checkpoint(run_dir, str(root / "models"), log=lambda _: None)
  finally:
    gin.clear_config()
  return dict(root=root, run_dir=run_dir, export=path, model=model)


def _support(shots, seed=0):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(len(shots), DIM))
  X = np.concatenate([means[c] + 0.3 * rng.normal(size=(k, DIM)) for c, k in enumerate(shots)])
  return X.astype(np.float32), np.repeat(np.arange(len(shots)), shots), means


def _in_process(model, X, codes, queries):
  """The model on the support set grouped by hand: [1, N, max K_n, d] and its mask."""
  norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  counts = np.bincount(codes)
  task = np.zeros((1, counts.size, counts.max(), DIM), np.float32)
  mask = np.zeros(task.shape[:3], np.float32)
  for c in range(counts.size):
    task[0, c, :counts[c]], mask[0, c, :counts[c]] = norm(X[codes == c]), 1.0
  out = model(dict(support=tf.constant(task), support_mask=tf.constant(mask),
                   query=tf.constant(norm(queries)[None, None], tf.float32)), training=False)
  return tf.nn.softmax(out["logits"][0, 0]).numpy()


def test_run_and_export_answer_as_the_model_on_an_unbalanced_support_set(run):
  X, codes, means = _support([1, 4, 2])
  names = np.array(["zebra", "ant", "moth"])             # classes_ sorted: ant, moth, zebra
  queries = np.concatenate([means, means + 0.1]).astype(np.float32)
  expected = _in_process(run["model"], X, codes, queries)[:, [1, 2, 0]]
  for path in (run["run_dir"], run["export"]):
    classifier = leo_tf.FewShotClassifier(path)
    assert classifier.fit(X, names[codes]) is classifier
    np.testing.assert_array_equal(classifier.classes_, ["ant", "moth", "zebra"])
    probabilities = classifier.predict_proba(queries)
    assert isinstance(probabilities, np.ndarray)
    np.testing.assert_allclose(probabilities, expected, atol=2e-6, err_msg=path)
    np.testing.assert_array_equal(classifier.predict(queries),
                                  classifier.classes_[expected.argmax(1)])


def test_predict_proba_is_the_classify_signature(run):
  """predict_proba classifies in numpy: the export's classify signature on the adapted
  weights gives the same probabilities (queries off the unit sphere: it normalises)."""
  X, codes, means = _support([3, 1, 2, 2], seed=4)
  queries = (3.0 * np.concatenate([means, -means, means[::-1] + 0.2])).astype(np.float32)
  classifier = leo_tf.FewShotClassifier(run["export"]).fit(X, codes)
  classify = tf.saved_model.load(run["export"]).signatures[export.CLASSIFY_SIGNATURE]
  expected = classify(weights=classifier.weights_, bias=classifier.bias_,
                      query_embeddings=tf.constant(queries))["probabilities"].numpy()
  probabilities = classifier.predict_proba(queries)
  np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
  assert probabilities.dtype == np.float32 and expected.min() < 0.2 < expected.max()


def test_labels_of_any_hashable_type_and_a_new_fit_replaces_the_support_set(run):
  classifier = leo_tf.FewShotClassifier(run["run_dir"])
  X, codes, means = _support([2, 3], seed=1)
  labels = [("dog", 1), "cat"]
  classifier.fit(X, [labels[c] for c in codes])
  assert classifier.classes_.dtype == object
  assert list(classifier.classes_) == [("dog", 1), "cat"]    # unorderable: first seen
  first = classifier.predict_proba(means)
  assert list(classifier.predict(means)) == [classifier.classes_[i] for i in first.argmax(1)]
  classifier.fit(X, [labels[1 - c] for c in codes])           # the same rows, names swapped
  assert list(classifier.classes_) == ["cat", ("dog", 1)]      # first seen again
  np.testing.assert_allclose(classifier.predict_proba(means), first, atol=2e-6)
  classifier.fit(X[1:4], [7, 9, 9])                            # another support set
  np.testing.assert_array_equal(classifier.classes_, [7, 9])
  fresh = leo_tf.FewShotClassifier(run["run_dir"]).fit(X[1:4], [7, 9, 9])
  np.testing.assert_allclose(classifier.predict_proba(means), fresh.predict_proba(means))
  assert np.abs(classifier.predict_proba(means) - first).max() > 1e-3
  assert classifier.predict(np.zeros((0, DIM))).shape == (0,)


def test_errors(run):
  classifier = leo_tf.FewShotClassifier(run["run_dir"])
  X, codes, _ = _support([2, 2])
  for call, error, message in [
      (lambda: classifier.predict(X), NotFittedError,
       "this FewShotClassifier is not fitted yet: call fit(X, y) with a support set first"),
      (lambda: classifier.fit(X, [0] * 4), ValueError,
       "fit needs examples of at least 2 classes; y has only 0"),
      (lambda: classifier.fit(X, codes[:3]), ValueError, "y has 3 labels for 4 examples in X"),
      (lambda: classifier.fit(X[:, :5], codes), ValueError,
       f"X has 5 features per example, but this model was meta-trained on {DIM}-d embeddings"),
      (lambda: classifier.fit(X[0], codes), ValueError,
       f"X must be a 2-D array of embeddings [n, d]; got one of shape ({DIM},)"),
      (lambda: classifier.fit(np.zeros((4, 8, 8, 1)), codes), ValueError,
       "X must be a 2-D array of embeddings [n, d] (or images [n, H, W, C]: this classifier "
       "has no backbone); got one of shape (4, 8, 8, 1)"),
  ]:
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
      call()
  classifier.fit(X, codes)
  with pytest.raises(ValueError, match="X has 17 features"):
    classifier.predict(np.zeros((2, 17)))
  with pytest.raises(ValueError, match=r"^X contains NaN or Inf values$"):
    classifier.predict(np.where(np.eye(2, DIM) > 0, np.nan, X[:2]))
  classifier._normalize = False  # pylint: disable=protected-access  # (an export's choice)
  with pytest.raises(ValueError, match=r"^X \(largest \|value\| 3.00e\+38\) overflows the "
                     "float32 computation of this model: give embeddings on the scale of the "
                     "ones it was trained on$"):
    classifier.predict(np.full((1, DIM), 3e38, np.float32))


def test_images_through_a_backbone(run, tmp_path):
  from leo_tf.backbone import inputs
  images = keras.Input((8, 8, 1))
  features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(images))
  backbone = keras.Model(images, keras.layers.Dense(DIM)(features))
  backbone.save(tmp_path / "backbone.keras")
  pictures = np.random.default_rng(2).integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
  labels = ["a", "b", "b", "c", "c", "c", "a"]
  embed = lambda x: backbone(inputs.preprocess(tf.constant(x)), training=False).numpy()
  on_images = leo_tf.FewShotClassifier(run["export"], backbone=str(tmp_path / "backbone.keras"))
  on_images.fit(pictures, labels)
  on_embeddings = leo_tf.FewShotClassifier(run["export"]).fit(embed(pictures), labels)
  np.testing.assert_allclose(on_images.predict_proba(pictures[:3]),
                             on_embeddings.predict_proba(embed(pictures[:3])), atol=2e-6)


def test_readme_example(run, monkeypatch, capsys):
  text = open(README).read()
  section = text[text.index("### A classifier of your own classes"):]
  block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  monkeypatch.chdir(run["root"])                              # where runs/mini1 is
  scope = {}
  exec(compile(block, "README.md", "exec"), scope)  # pylint: disable=exec-used
  classifier, queries = scope["classifier"], scope["queries"]
  np.testing.assert_array_equal(classifier.classes_, ["cat", "dog", "fox"])
  printed = capsys.readouterr().out
  assert re.match(r"\['(cat|dog|fox)' '(cat|dog|fox)' '(cat|dog|fox)'\]\n", printed), printed
  np.testing.assert_allclose(classifier.predict_proba(queries).sum(1), 1.0, rtol=1e-6)
