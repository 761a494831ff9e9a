"""leo-export: a SavedModel that adapts inside the graph, checked on every load path.

One module fixture meta-trains nothing: it builds the trainer's model, perturbs its
weights (so adaptation is far from the initialisation), writes a checkpoint and config
the way leo-train does, and runs the leo-export CLI with a small image backbone. Served
answers are compared with the in-process model in evaluation mode.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import synthetic_embeddings
from leo_tf import gin_config
from leo_tf.leo.config import LEOConfig, TrainConfig
from leo_tf.leo.trainer import MetaTrainer
from leo_tf.runtime.rundir import RunDir
from leo_tf.serving import export, warmup

DIM = 16
TESTS = os.path.dirname(os.path.abspath(__file__))
BINDINGS = [
    # Trained as 3-way 2-shot; served for any N and K.
    "LEOConfig.num_classes = 3", "LEOConfig.num_shots = 2", "LEOConfig.latent_size = 8",
    "LEOConfig.relation_hidden = [12]", "LEOConfig.inner_steps_test = 3",
    "LEOConfig.finetune_steps_test = 2", "LEOConfig.finetune_lr_init = 0.3",
    "LEOConfig.dropout_rate = 0.4",
]


# Bound at export (the defaults are for a 16 GB server); 5-way 5-shot warm-up fits.
LIMITS = dict(max_classes=6, max_support=30, max_queries=80)


def _run(args, **kwargs):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                        **kwargs)


def _tiny_backbone(path):
  images = keras.Input((8, 8, 1))
  x = keras.layers.Conv2D(6, 3, activation="relu")(images)
  x = keras.layers.BatchNormalization()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  backbone = keras.Model(images, keras.layers.Dense(DIM)(x))
  backbone.save(path)
  return backbone


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  run_dir, base = str(root / "run"), str(root / "models")
  gin_config.parse([], BINDINGS)
  os.makedirs(run_dir)
  gin_config.save_config(RunDir(run_dir).config)
  config = LEOConfig()
  gin.clear_config()
  data = synthetic_embeddings(6, 20, dim=DIM)
  trainer = MetaTrainer(config, TrainConfig(num_steps=1), data, None, run_dir,
                        log=lambda _: None)
  rng = np.random.default_rng(3)
  for v in trainer.model.variables:
    v.assign(v * rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))
  trainer.best.save(checkpoint_number=1)
  backbone = _tiny_backbone(str(root / "backbone.keras"))
  result = _run([sys.executable, "-m", "leo_tf.cli.export", f"--checkpoint_dir={run_dir}",
                 f"--export_base={base}", f"--backbone={root / 'backbone.keras'}"]
                + [f"--gin_bindings=ServingLimits.{k} = {v}" for k, v in LIMITS.items()])
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(dir=os.path.join(base, "1"), base=base, model=trainer.model,
              backbone=backbone, root=root, run_dir=run_dir)


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported["dir"])


def _request(n, k, m, seed=0, scale=1.0):
  """Shuffled support rows with labels, queries, and the task the model adapts on: the
  grouped [1, N, K, d] support for K = ``k``, or, for ``k`` the shots of each class, the
  support padded to [1, N, max K_n, d] and its mask [1, N, max K_n]."""
  rng = np.random.default_rng(seed)
  shots = np.broadcast_to(k, n)
  mask = (np.arange(shots.max()) < shots[:, None])[None].astype(np.float32)
  task = rng.normal(size=mask.shape + (DIM,)).astype(np.float32) * scale * mask[..., None]
  queries = rng.normal(size=(m, DIM)).astype(np.float32) * scale
  order = rng.permutation(shots.sum())
  rows = task[0][mask[0] > 0][order]                       # class by class, then shuffled
  labels = np.repeat(np.arange(n), shots)[order].astype(np.int64)
  request = dict(support_embeddings=rows, support_labels=labels, query_embeddings=queries)
  return request, (task if np.ndim(k) == 0 else (task, mask))


def _normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _expected(model, task, queries):
  """The in-process model in evaluation mode on the normalised task (a padded one with
  its support mask, when ``task`` is the pair)."""
  support, mask = task if isinstance(task, tuple) else (task, None)
  episode = dict(support=tf.constant(_normalize(support)),
                 query=tf.constant(_normalize(queries))[None, None])
  if mask is not None:
    episode["support_mask"] = tf.constant(mask)
  return tf.nn.softmax(model(episode, training=False)["logits"][0, 0]).numpy()


# Balanced (N, K, M), and unbalanced: the shots of each class.
CASES = [(5, 1, 75), (2, 3, 4), (3, 2, 1), (4, [1, 3, 2, 5], 7), (2, [1, 4], 3)]


def test_layout_versions_and_metadata(exported):
  d = exported["dir"]
  assert os.path.isfile(os.path.join(d, "saved_model.pb"))
  extra = os.path.join(d, export.ASSETS_EXTRA)
  assert sorted(os.listdir(extra)) == sorted(
      ["config.gin", export.METADATA_FILE, warmup.WARMUP_FILE])
  with open(os.path.join(extra, export.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta["dim"] == DIM and meta["l2_normalize"] is True and meta["version"] == 1
  assert meta["signatures"] == ["serving_default", "adapt", "classify", "classify_images"]
  assert meta["leo_config"]["inner_steps_test"] == 3
  assert meta["checkpoint"].endswith("ckpt-1")
  assert os.listdir(exported["base"]) == ["1"]  # no temporary directory left behind
  assert export.next_version(exported["base"]) == 2
  with pytest.raises(export.ExportError, match="already exists"):
    export.write_export(exported["model"], d, True)


def test_tf2_load_matches_model_for_any_n_and_k(exported, loaded):
  """Trained 3-way 2-shot; requests of other N, K, M in shuffled label order, and
  unbalanced ones, which the model adapts on padded with their support mask (a balanced
  request's answer is the unmasked model's)."""
  serve = loaded.signatures["serving_default"]
  for i, (n, k, m) in enumerate(CASES):
    request, task = _request(n, k, m, seed=i, scale=1.0 + i)  # unnormalised on purpose
    out = serve(**{key: tf.constant(v) for key, v in request.items()})
    expected = _expected(exported["model"], task, request["query_embeddings"])
    assert out["probabilities"].shape == (m, n)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=2e-6)
    np.testing.assert_array_equal(out["labels"].numpy(), expected.argmax(-1))


def test_adaptation_changes_the_answer(loaded):
  """Same queries, support labels swapped between two classes -> probabilities swap."""
  serve = loaded.signatures["serving_default"]
  request, _ = _request(3, 2, 6, seed=7)
  a = serve(**{key: tf.constant(v) for key, v in request.items()})["probabilities"].numpy()
  swapped = dict(request, support_labels=np.array([[1, 0, 2][l] for l in
                                                   request["support_labels"]]))
  b = serve(**{key: tf.constant(v) for key, v in swapped.items()})["probabilities"].numpy()
  np.testing.assert_allclose(b, a[:, [1, 0, 2]], atol=2e-6)
  assert np.abs(a[:, 0] - a[:, 1]).max() > 1e-3


def test_image_signature_runs_the_backbone_first(exported, loaded):
  from leo_tf.backbone import inputs
  serve = loaded.signatures["classify_images"]
  rng = np.random.default_rng(5)
  support = rng.integers(0, 256, size=(4, 2, 8, 8, 1), dtype=np.uint8)
  query = rng.integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
  order = rng.permutation(8)
  labels = np.repeat(np.arange(4), 2)[order]
  out = serve(support_images=tf.constant(support.reshape(8, 8, 8, 1)[order]),
              support_labels=tf.constant(labels, tf.int64),
              query_images=tf.constant(query))
  embed = lambda x: exported["backbone"](inputs.preprocess(tf.constant(x)),
                                         training=False).numpy()
  task = embed(support.reshape(8, 8, 8, 1)).reshape(1, 4, 2, DIM)
  expected = _expected(exported["model"], task, embed(query))
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=2e-6)


BAD = {
    "lengths": (dict(support_labels=[0, 1, 2]), "one label per row"),
    "negative": (dict(support_labels=[0, 1, -1, 2]), "negative labels"),
    "too_large": (dict(support_labels=[0, 1, 9, 2]), "largest label is.*9"),
    "missing_class": (dict(support_labels=[0, 0, 2, 2]), r"classes without one:\] \[1\]"),
    "one_class": (dict(support_labels=[0, 0, 0, 0]), "at least 2 classes"),
    "empty": (dict(support_embeddings=np.zeros((0, DIM), np.float32),
                   support_labels=np.zeros((0,), np.int64)), "support set is empty"),
}


def _bad_request(change):
  request = dict(support_embeddings=np.ones((4, DIM), np.float32),
                 support_labels=[0, 1, 0, 1], query_embeddings=np.ones((2, DIM), np.float32))
  request.update(change)
  request["support_labels"] = np.asarray(request["support_labels"], np.int64)
  return request


def _call(signature, request):
  return {k: v.numpy() for k, v in signature(**{key: tf.constant(v) for key, v in
                                                request.items()}).items()}


def _support(request):
  return {k: v for k, v in request.items() if k.startswith("support_")}


def test_adapt_once_then_classify_answers_as_serving_default(loaded):
  """The adapted classifier, stored by the client as numpy arrays, classifies query
  batches of any size as serving_default answers the whole request."""
  adapt, classify = loaded.signatures["adapt"], loaded.signatures["classify"]
  for i, (n, k, m) in enumerate(CASES):
    request, _ = _request(n, k, m, seed=30 + i, scale=1.0 + i)
    classifier = _call(adapt, _support(request))
    assert classifier["weights"].shape == (n, DIM) and classifier["bias"].shape == (n,)
    expected = _call(loaded.signatures["serving_default"], request)
    for rows in (slice(0, 1), slice(1, m)):
      out = _call(classify, dict(classifier, query_embeddings=request["query_embeddings"][rows]))
      np.testing.assert_allclose(out["probabilities"], expected["probabilities"][rows],
                                 atol=2e-6)
      np.testing.assert_array_equal(out["labels"], expected["labels"][rows])


def test_classify_is_softmax_of_normalised_queries_times_weights_plus_bias(loaded):
  weights = np.array([[2.0] + [0.0] * (DIM - 1), [0.0, 1.0] + [0.0] * (DIM - 2)], np.float32)
  bias = np.array([0.5, -0.5], np.float32)
  queries = np.zeros((2, DIM), np.float32)
  queries[0, 0], queries[1, :2] = 3.0, [-4.0, 3.0]  # unit rows: [1, 0], [-0.8, 0.6]
  out = _call(loaded.signatures["classify"], dict(weights=weights, bias=bias,
                                                  query_embeddings=queries))
  logits = np.array([[2.0 + 0.5, 0.0 - 0.5], [-1.6 + 0.5, 0.6 - 0.5]])
  expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6)
  np.testing.assert_array_equal(out["labels"], [0, 1])


CLASSIFY_BAD = {
    "bias_length": (dict(bias=np.zeros(3, np.float32)),
                    r"bias must have one entry per row of weights; got\] \[3\] \[for\] \[2"),
    "features": (dict(weights=np.ones((2, DIM + 1), np.float32)),
                 rf"weights must have {DIM} features .* got\] \[{DIM + 1}\]"),
    "nan_bias": (dict(bias=np.array([0.0, np.nan], np.float32)), "bias contains NaN or Inf"),
    "inf_weights": (dict(weights=np.full((2, DIM), np.inf, np.float32)),
                    "weights contains NaN or Inf"),
    "one_class": (dict(weights=np.ones((1, DIM), np.float32), bias=np.zeros(1, np.float32)),
                  r"at least 2 classes; got\] \[1\]"),
    "too_many_classes": (dict(weights=np.ones((7, DIM), np.float32),
                              bias=np.zeros(7, np.float32)),
                         r"weights has\] \[7\] \[rows; this export serves at most N = 6"),
    "too_many_queries": (dict(query_embeddings=np.ones((81, DIM), np.float32)),
                         r"query_embeddings has\] \[81\] \[rows; this export serves at most"),
    "rank": (dict(bias=np.zeros((2, 1), np.float32)),
             r"bias must be a tensor of shape \[N\]; got one of rank\] \[2\]"),
    "overflow": (dict(weights=np.full((2, DIM), 3e38, np.float32)),
                 r"the classifier and query embeddings of this request \(largest \|value\|\] "
                 r"\[3.00e\+38\] \[\) overflow the float32 computation"),
}


def test_bad_requests_fail_with_clear_messages(loaded):
  serve = loaded.signatures["serving_default"]
  for name, (change, message) in BAD.items():
    request = _bad_request(change)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      serve(**{key: tf.constant(v) for key, v in request.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      _call(loaded.signatures["adapt"], _support(request))
  for name, (change, message) in CLASSIFY_BAD.items():
    request = dict(weights=np.ones((2, DIM), np.float32), bias=np.zeros(2, np.float32),
                   query_embeddings=np.ones((3, DIM), np.float32))
    request.update(change)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      _call(loaded.signatures["classify"], request)
  # The restored signature does not check shapes itself: the graph does.
  for name in ("support_embeddings", "query_embeddings"):
    wrong = dict(_bad_request({}), **{name: np.ones((4, DIM + 1), np.float32)})
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name} must have {DIM} features .* got\] \[{DIM + 1}\]"):
      serve(**{key: tf.constant(v) for key, v in wrong.items()})
    request = _bad_request({})
    poisoned = np.array(request[name], np.float32)
    poisoned[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name} contains NaN or Inf"):
      serve(**{key: tf.constant(v) for key, v in dict(request, **{name: poisoned}).items()})


def test_requests_beyond_the_export_limits_are_refused(exported, loaded):
  """N, N*K and M as bound at export (leo_export.json records them); labels range-checked
  as int64, so 2**32 + 1 is not served as class 1."""
  with open(os.path.join(exported["dir"], export.ASSETS_EXTRA, export.METADATA_FILE)) as f:
    assert json.load(f)["serving_limits"] == dict(LIMITS, max_image_size=512)
  serve = loaded.signatures["serving_default"]
  call = lambda r: serve(**{key: tf.constant(v) for key, v in r.items()})
  assert call(_request(6, 5, 80)[0])["probabilities"].shape == (80, 6)  # at the limits
  for (n, k, m), message in [
      ((7, 1, 3), r"serves at most N = 6 classes \(ServingLimits.max_classes\); the largest "
                  r"support label is\] \[6\]"),
      ((2, 16, 3), r"support_labels has\] \[32\] \[entries; this export serves at most "
                   r"N\*K = 30 support examples"),
      ((2, 1, 81), r"query_embeddings has\] \[81\] \[rows; this export serves at most M = 80"),
  ]:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      call(_request(n, k, m)[0])
  # 17 rows, but padded to the largest class 5 x 13 = 65: the inner loops' size.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"the support set padded to its largest class has N x max K_n =\] "
                           r"\[65\] \[examples; this export serves at most 30 "
                           r"\(ServingLimits.max_support\)"):
    call(_request(5, [1, 1, 1, 1, 13], 3)[0])
  assert call(_request(5, [1, 1, 1, 1, 6], 3)[0])["probabilities"].shape == (3, 5)  # 5 x 6
  request = _request(2, 1, 3)[0]
  request["support_labels"] = np.array([0, 2**32 + 1], np.int64)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"the largest label is\] \[4294967297\] \[and there are only\] \[2\]"):
    call(request)
  request["support_labels"] = np.array([0, -2**32 + 1], np.int64)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"negative labels:\] \[-4294967295\]"):
    call(request)
  wide = dict(request, support_embeddings=np.ones((31, DIM), np.float32))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"support_embeddings has\] \[31\]"):
    call(wide)


def test_fresh_process_without_leo_tf_and_session_path(exported, loaded, tmp_path):
  """tf.saved_model.load and the TF1 Session loader (TF Serving's path, fed from a
  PredictRequest), no leo_tf; adapt's classifier classifies on both."""
  requests, expected = {}, {}
  for i, (n, k, m) in enumerate(CASES):
    request, task = _request(n, k, m, seed=10 + i)
    requests.update({f"ok{i}/{key}": v for key, v in request.items()})
    requests[f"ok{i}/_signature"] = np.array("serving_default")
    expected[f"ok{i}"] = _expected(exported["model"], task, request["query_embeddings"])
  for name in ("missing_class", "negative"):
    change, _ = BAD[name]
    requests.update({f"{name}/{key}": v for key, v in _bad_request(change).items()})
    requests[f"{name}/_signature"] = np.array("serving_default")
  # adapt, then classify with the classifier it gave (here through the TF2 path).
  request, _ = _request(4, [1, 3, 2, 5], 9, seed=13)   # unbalanced
  classifier = _call(loaded.signatures["adapt"], _support(request))
  for name, signature, inputs in (
      ("adapt", "adapt", _support(request)),
      ("classify", "classify", dict(classifier, query_embeddings=request["query_embeddings"]))):
    requests.update({f"{name}/{key}": v for key, v in inputs.items()})
    requests[f"{name}/_signature"] = np.array(signature)
  expected["classify"] = _call(loaded.signatures["serving_default"], request)["probabilities"]
  np.savez(tmp_path / "requests.npz", **requests)
  result = _run([sys.executable, os.path.join(TESTS, "_serving_client.py"), exported["dir"],
                 str(tmp_path / "requests.npz"), str(tmp_path / "out.npz")],
                cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  assert not out["leo_tf_imported"]
  for name, probabilities in expected.items():
    for path in ("tf2", "session"):
      np.testing.assert_allclose(out[f"{name}/{path}/probabilities"], probabilities,
                                 atol=2e-6, err_msg=f"{name} on the {path} path")
      np.testing.assert_array_equal(out[f"{name}/{path}/labels"], probabilities.argmax(-1))
  for name in ("missing_class", "negative"):
    assert re.search(BAD[name][1], str(out[f"{name}/session/error"]))
  for path in ("tf2", "session"):
    for key, value in classifier.items():
      np.testing.assert_allclose(out[f"adapt/{path}/{key}"], value, atol=1e-6)


def _saved_model_cli(export_dir, signature, inputs, outdir):
  result = _run(["saved_model_cli", "run", "--dir", export_dir, "--tag_set", "serve",
                 "--signature_def", signature, "--inputs", inputs, "--outdir", str(outdir)])
  assert result.returncode == 0, result.stderr[-3000:]


def test_saved_model_cli_run(exported, tmp_path):
  request, task = _request(5, 1, 75, seed=20)
  np.savez(tmp_path / "req.npz", **request)
  inputs = ";".join(f"{k}={tmp_path / 'req.npz'}[{k}]" for k in request)
  _saved_model_cli(exported["dir"], "serving_default", inputs, tmp_path / "out")
  expected = _expected(exported["model"], task, request["query_embeddings"])
  np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), expected,
                             atol=2e-6)


def test_saved_model_cli_adapt_then_classify_unbalanced(exported, tmp_path):
  """docs/serving.md's two lines: adapt writes the classifier, classify reads it back."""
  request, task = _request(3, [1, 4, 2], 6, seed=21)
  np.savez(tmp_path / "req.npz", **request)
  support = ";".join(f"{k}={tmp_path / 'req.npz'}[{k}]" for k in _support(request))
  _saved_model_cli(exported["dir"], "adapt", support, tmp_path / "classifier")
  classifier = tmp_path / "classifier"
  _saved_model_cli(exported["dir"], "classify",
                   f"weights={classifier / 'weights.npy'};bias={classifier / 'bias.npy'};"
                   f"query_embeddings={tmp_path / 'req.npz'}[query_embeddings]",
                   tmp_path / "out")
  expected = _expected(exported["model"], task, request["query_embeddings"])
  np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), expected,
                             atol=2e-6)
  np.testing.assert_array_equal(np.load(tmp_path / "out" / "labels.npy"), expected.argmax(-1))


def test_warmup_requests_replay(exported, loaded):
  records = warmup.read(os.path.join(exported["dir"], export.ASSETS_EXTRA,
                                     warmup.WARMUP_FILE))
  assert [name for name, _ in records] == (["serving_default"] * 2 +
                                           ["adapt", "classify", "classify_images"])
  for name, inputs in records:
    out = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    classes = out["weights"].shape[0] if name == "adapt" else out["probabilities"].shape[1]
    assert classes == 5
  # The file as TF Serving reads it: PredictionLog records of the real protos.
  from tensorflow_serving.apis import prediction_log_pb2
  path = os.path.join(exported["dir"], export.ASSETS_EXTRA, warmup.WARMUP_FILE)
  logs = [prediction_log_pb2.PredictionLog.FromString(record)
          for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]
  assert len(logs) == 5
  for log in logs:
    assert log.predict_log.request.model_spec.name == "leo"
    assert len(log.predict_log.request.inputs) >= 2


def test_bad_arguments(exported, tmp_path):
  result = _run([sys.executable, "-m", "leo_tf.cli.export", "--export_base=x"])
  assert result.returncode == 2 and "--checkpoint_dir is required" in result.stderr
  try:
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*latest"):
      export.export_checkpoint(exported["run_dir"], str(tmp_path), which="latest")
    with pytest.raises(export.ExportError, match="positive integer"):
      export.export_checkpoint(exported["run_dir"], str(tmp_path), version=0)
  finally:
    gin.clear_config()
  assert os.listdir(tmp_path) == []


def test_backbone_that_is_not_a_keras_model_is_one_line(exported, tmp_path):
  """A garbage file ("File not found" before) and a Lambda layer (a traceback before)."""
  garbage = tmp_path / "garbage.keras"
  garbage.write_bytes(b"not a zip file")
  images = keras.Input((8, 8, 1))
  doubled = keras.layers.Lambda(lambda x: x * 2.0)(images)
  lambda_model = keras.Model(images, keras.layers.Dense(DIM)(
      keras.layers.GlobalAveragePooling2D()(doubled)))
  lambda_model.save(tmp_path / "lambda.keras")
  for path, line in (
      (garbage, f"error: --backbone: {garbage} is not a saved Keras model (a .keras zip file, "
                "as leo-pretrain writes)"),
      (tmp_path / "lambda.keras",
       f"error: --backbone: {tmp_path / 'lambda.keras'} holds a Lambda layer, whose Python "
       "code Keras refuses to load; rebuild the backbone from standard layers")):
    result = _run([sys.executable, "-m", "leo_tf.cli.export",
                   f"--checkpoint_dir={exported['run_dir']}",
                   f"--export_base={tmp_path / 'models'}", f"--backbone={path}"])
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [line]
  assert not os.path.exists(tmp_path / "models" / "1")


def test_full_disk_says_nothing_was_exported(exported, tmp_path):
  """leo-export into a 64 KiB tmpfs (a private mount namespace): the advice is not
  leo-train's."""
  if shutil.which("unshare") is None or subprocess.run(
      ["unshare", "-rm", "true"], capture_output=True).returncode:
    pytest.skip("needs unshare -rm (user and mount namespaces)")
  mount = tmp_path / "mnt"
  mount.mkdir()
  script = (f"mount -t tmpfs -o size=64k tmpfs {mount} && exec {sys.executable} -m "
            f"leo_tf.cli.export --checkpoint_dir={exported['run_dir']} "
            f"--export_base={mount}/models")
  result = _run(["unshare", "-rm", "sh", "-c", script])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: ") and lines[0].endswith(
      "No space left on device (free some space and run again; nothing was exported)"), lines


def test_old_version_flag_is_refused_naming_the_new_one(tmp_path):
  """--version was the export's version number once; now it prints versions (and exited 0
  without exporting when given a value)."""
  result = _run([sys.executable, "-m", "leo_tf.cli.export", "--checkpoint_dir=x",
                 f"--export_base={tmp_path}", "--version=1"])
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.splitlines() == [
      "error: --version=1: --version takes no value (it prints the versions); the export's "
      "version number is --model_version=1"]
