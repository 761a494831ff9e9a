"""The public Python API: lazy top-level names, and the README's example on numpy arrays."""

import importlib.metadata
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import leo_tf
from leo_tf.runtime.rundir import RunDir

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


def _readme_example() -> str:
  text = open(README).read()
  section = text[text.index("## From Python"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_is_light_and_versioned():
  # A console script's start (flags, --help, --version) must not pay for TensorFlow.
  out = subprocess.run(
      [sys.executable, "-c", "import sys, leo_tf; print(leo_tf.__version__, "
       "sorted(m for m in ('tensorflow', 'keras', 'gin') if m in sys.modules))"],
      capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
  assert out == [importlib.metadata.version("leo_tf"), "[]\n"]


def test_every_exported_name_resolves():
  for name in leo_tf.__all__:
    assert getattr(leo_tf, name) is not None, name
  assert leo_tf.MetaTrainer.__module__ == "leo_tf.leo.trainer"
  assert set(leo_tf.__all__) <= set(dir(leo_tf))
  with pytest.raises(AttributeError, match="no attribute 'train'"):
    leo_tf.train  # pylint: disable=pointless-statement


def test_embedding_set_from_arrays():
  features = np.arange(12, dtype=np.float64).reshape(6, 2)
  data = leo_tf.EmbeddingSet.from_arrays(features, ["b", "a", "b", "c", "a", "c"])
  assert data.class_names == ["a", "b", "c"] and data.dim == 2
  np.testing.assert_array_equal(data.class_ids, [1, 0, 1, 2, 0, 2])
  assert data.embeddings.dtype == np.float32
  with pytest.raises(leo_tf.EmbeddingDataError, match="lengths differ: 6 embeddings, 5"):
    leo_tf.EmbeddingSet.from_arrays(features, [0, 1, 2, 3, 4])
  with pytest.raises(leo_tf.EmbeddingDataError, match="may not contain '-'"):
    leo_tf.EmbeddingSet.from_arrays(features, ["x-y"] * 6)
  with pytest.raises(leo_tf.EmbeddingDataError, match="NaN or Inf"):
    leo_tf.EmbeddingSet.from_arrays(np.full((6, 2), np.nan), np.arange(6))


def test_readme_example_meta_trains_and_evaluates(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(_readme_example(), "README.md", "exec"), scope)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "5-way 1-shot test accuracy: " in printed
  assert RunDir(tmp_path / "runs" / "arrays").newest("best")
  # Meta-training is what got it there: the same model before training, same episodes.
  untrained = leo_tf.MetaTrainer(scope["model_config"], scope["train_config"],
                                 scope["train"], None, str(tmp_path / "untrained")).model
  before = leo_tf.evaluate(untrained, scope["episodes"], 1000, 20, seed=0).mean
  after = scope["result"].mean
  assert after > 0.6 and after > before + 0.15, (before, after)
