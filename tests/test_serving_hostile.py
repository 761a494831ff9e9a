"""Hostile requests to an export of a run trained without L2 normalisation (issue 26), on
both load paths: finite values that overflow inside, tensors of the wrong rank, images
larger than the export serves."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import TINY_SIZES
from leo_tf.backbone import inputs
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.model import build_leo
from leo_tf.serving import export, graph

DIM = 6
SIDE = 16  # ServingLimits.max_image_size of the export
TESTS = os.path.dirname(os.path.abspath(__file__))
OVERFLOW = (r"the embeddings of this request \(largest \|value\|\] \[{}\] \[\) overflow the "
            r"float32 computation of this model: send embeddings on the scale of the ones it "
            r"was trained on")


@pytest.fixture(scope="module")
def raw_export(tmp_path_factory):
  """An export that does not L2-normalise, with a backbone of any image size."""
  keras.utils.set_random_seed(0)
  model = build_leo(LEOConfig(**TINY_SIZES, inner_steps_test=1, finetune_steps_test=1), DIM)
  images = keras.Input((None, None, 1))
  x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(images))
  backbone = keras.Model(images, keras.layers.Dense(DIM)(x))
  directory = str(tmp_path_factory.mktemp("raw") / "1")
  export.write_export(model, directory, normalize=False, backbone=backbone,
                      preprocess=inputs.preprocess,
                      limits=graph.ServingLimits(max_image_size=SIDE))
  return directory


def _request(support_scale=1.0, query_value=None, seed=0):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(3, DIM)).astype(np.float32)
  if query_value is not None:  # finite, near float32's largest
    query = np.sign(query) * np.float32(query_value)
  return dict(support_embeddings=rng.normal(size=(4, DIM)).astype(np.float32)
              * np.float32(support_scale),
              support_labels=np.array([0, 1, 0, 1], np.int64), query_embeddings=query)


def _images(support_shape, query_shape):
  rng = np.random.default_rng(1)
  return dict(support_images=rng.integers(0, 256, size=support_shape, dtype=np.uint8),
              support_labels=np.array([0, 1], np.int64),
              query_images=rng.integers(0, 256, size=query_shape, dtype=np.uint8))


REQUESTS = {
    "normal": ("serving_default", _request()),
    "support_1e30": ("serving_default", _request(support_scale=1e30)),
    "queries_3e38": ("serving_default", _request(query_value=3e38)),
    "images_at_the_limit": ("classify_images", _images((2, SIDE, SIDE, 1), (1, SIDE, SIDE, 1))),
    "support_images_too_tall": ("classify_images", _images((2, SIDE + 1, 8, 1), (1, 8, 8, 1))),
    "query_images_too_wide": ("classify_images", _images((2, 8, 8, 1), (1, 8, SIDE + 1, 1))),
}


@pytest.fixture(scope="module")
def answers(raw_export, tmp_path_factory):
  """Every request of REQUESTS on the TF2 and the Session path (a fresh process)."""
  tmp = tmp_path_factory.mktemp("requests")
  arrays = {f"{name}/_signature": np.array(signature)
            for name, (signature, _) in REQUESTS.items()}
  arrays.update({f"{name}/{key}": value for name, (_, request) in REQUESTS.items()
                 for key, value in request.items()})
  np.savez(tmp / "requests.npz", **arrays)
  proc = subprocess.run([sys.executable, os.path.join(TESTS, "_serving_client.py"),
                         raw_export, str(tmp / "requests.npz"), str(tmp / "out.npz")],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(tmp / "out.npz"))


@pytest.mark.parametrize("path", ["tf2", "session"])
def test_finite_input_gives_finite_output_or_invalid_argument(answers, path):
  """Finite probabilities, or the overflow refused (before: NaN and all labels 0, OK)."""
  for name in ("normal", "support_1e30", "queries_3e38"):
    if f"{name}/{path}/probabilities" in answers:
      assert np.isfinite(answers[f"{name}/{path}/probabilities"]).all(), name
    else:
      error = str(answers[f"{name}/{path}/error"])
      assert re.search(OVERFLOW.format(r"\d\.\d\de\+(30|38)"), error), error
  assert f"normal/{path}/probabilities" in answers
  assert f"support_1e30/{path}/error" in answers  # 1e30 overflows this model


@pytest.mark.parametrize("path", ["tf2", "session"])
def test_images_larger_than_the_export_serves_are_refused(answers, path):
  assert answers[f"images_at_the_limit/{path}/probabilities"].shape == (1, 2)
  assert (f"support_images are] [{SIDE + 1}] [x] [8] [pixels; this export serves images of "
          f"at most {SIDE} x {SIDE} (ServingLimits.max_image_size)") in str(
              answers[f"support_images_too_tall/{path}/error"])
  assert f"query_images are] [8] [x] [{SIDE + 1}] [pixels" in str(
      answers[f"query_images_too_wide/{path}/error"])


@pytest.mark.parametrize("name, value, message", [
    ("support_embeddings", np.ones((4,), np.float32),
     "support_embeddings must be a tensor of shape [N*K, d]; got one of rank] [1]"),
    ("support_labels", np.int64(0), "support_labels must be a tensor of shape [N*K]; got one "
                                    "of rank] [0]"),
    ("query_embeddings", np.ones((1, 3, DIM), np.float32),
     "query_embeddings must be a tensor of shape [M, d]; got one of rank] [3]"),
    ("support_images", np.ones((2, 8, 8), np.uint8),
     "support_images must be a tensor of shape [N*K, height, width, channels]; got one of "
     "rank] [3]"),
])
def test_tensors_of_the_wrong_rank_are_named(raw_export, name, value, message):
  """The restored signature feeds any shape into the graph (as TF Serving does); the
  Python Session client checks feeds itself, so this is the TF2 path."""
  loaded = tf.saved_model.load(raw_export)
  signature = "classify_images" if "images" in name else "serving_default"
  request = dict(REQUESTS["images_at_the_limit" if "images" in name else "normal"][1])
  request[name] = value
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    loaded.signatures[signature](**{k: tf.constant(v) for k, v in request.items()})
  assert message in error.value.message
