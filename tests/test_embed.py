"""Embedding extraction round-trips through leo_tf.data.embeddings; the stage pipeline
skips what exists."""

import functools
import os

import gin
import numpy as np
import pytest

from leo_tf.backbone import embed, pipeline, pretrain, wrn
from leo_tf.data import embeddings as emb_lib
from leo_tf.data.splits import SPLITS
from _tiny_images import tiny_source

TINY_WRN = functools.partial(wrn.build_wrn, depth=10, width=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("backbone"))
  config = pretrain.PretrainConfig(batch_size=16, steps=10, steps_per_loop=5,
                                   holdout_fraction=0.0)
  pretrain.pretrain(tiny_source("train"), path, config=config, backbone_fn=TINY_WRN,
                    log=lambda _: None)
  return path


def test_extraction_round_trips_through_load_split(model_dir, tmp_path):
  root = str(tmp_path)
  sources = {s: functools.partial(tiny_source, s) for s in SPLITS}
  paths = embed.embed_splits(model_dir, sources, root, "tiny", "center", log=lambda _: None)
  for split in SPLITS:
    assert paths[split] == os.path.join(root, "tiny", "center", f"{split}_embeddings.pkl")
    source = tiny_source(split)
    loaded = emb_lib.load_split(root, "tiny", "center", split, l2_normalize=False)
    assert loaded.embeddings.shape == (source.num_examples, 64)
    assert loaded.class_names == sorted(source.class_names)
    assert loaded.keys[0] == f"0-{split}c0-img_0000.png"
    assert [emb_lib.class_from_key(k) for k in loaded.keys] == [
        source.class_names[c] for c in np.repeat(np.arange(4), source.num_examples // 4)]
    # Same backbone, same image -> same embedding as a direct forward pass.
    backbone = embed.load_backbone(model_dir)
    first = next(iter(source.dataset))
    from leo_tf.backbone import inputs  # pylint: disable=g-import-not-at-top
    direct = backbone(inputs.preprocess(first["image"])[None], training=False).numpy()
    np.testing.assert_allclose(loaded.embeddings[0], direct[0], rtol=1e-4, atol=1e-5)


def test_every_split_and_batch_shares_one_trace(model_dir, tmp_path, caplog):
  # Batches of 5 of 48 and 24 examples: a smaller last batch in every split.
  gin.clear_config()
  gin.parse_config("write_split.batch_size = 5")
  sources = {s: functools.partial(tiny_source, s) for s in SPLITS}
  embed.traced_backbone.cache_clear()
  with caplog.at_level("WARNING"):
    embed.embed_splits(model_dir, sources, str(tmp_path), "tiny", "center",
                       log=lambda _: None)
  gin.clear_config()
  assert not [r for r in caplog.records if "retracing" in r.getMessage()]
  traced = embed.traced_backbone.cache_info()
  assert traced.currsize == 1 and traced.misses == 1  # one function for three splits


def test_missing_backbone_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="leo-pretrain"):
    embed.load_backbone(str(tmp_path))


@pytest.fixture
def tiny_gin():
  gin.clear_config()
  gin.parse_config("""
      PretrainConfig.batch_size = 16
      PretrainConfig.steps = 6
      PretrainConfig.steps_per_loop = 3
      PretrainConfig.holdout_fraction = 0.0
      build_wrn.depth = 10
      build_wrn.width = 1
  """)
  yield
  gin.clear_config()


def test_pipeline_runs_stages_once_then_skips(tmp_path, tiny_gin):
  calls, lines = [], []

  def source(split):
    calls.append(split)
    return tiny_source(split)

  kwargs = dict(image_source=source, log=lines.append)
  paths = pipeline.build_embeddings(str(tmp_path), "tiny", "center", **kwargs)
  assert all(os.path.exists(p) for p in paths.values())
  assert os.path.exists(tmp_path / "tiny" / "backbone" / "backbone.keras")
  assert any("done in" in l and "pre-training" in l for l in lines)

  # Lose one split: only extraction of that split runs again, pre-training is reused.
  os.remove(paths["val"])
  calls.clear(), lines.clear()
  pipeline.build_embeddings(str(tmp_path), "tiny", "center", **kwargs)
  assert any("pre-training skipped" in l for l in lines)
  assert sorted(calls) == ["train", "val"]
  assert any("train: " in l and "kept" in l for l in lines)

  calls.clear(), lines.clear()
  pipeline.build_embeddings(str(tmp_path), "tiny", "center", **kwargs)
  assert calls == [] and any("all stages skipped" in l for l in lines)
