"""Mixed precision and XLA for the backbone: pre-training learns in bfloat16 and in
loss-scaled float16 (under XLA), extraction in another precision writes float32
embeddings close to float32's."""

import functools

import keras
import numpy as np
import pytest

from leo_tf.backbone import embed, precision, pretrain, wrn
from leo_tf.data import embeddings as emb_lib
from _tiny_images import tiny_source, tiny_split

TINY_WRN = functools.partial(wrn.build_wrn, depth=10, width=1)


def _pretrain(path, **overrides):
  values = dict(batch_size=16, steps=20, steps_per_loop=5, log_every=5,
                holdout_fraction=0.0, checkpoint_every=20)
  values.update(overrides)
  lines = []
  result = pretrain.pretrain(tiny_split(), str(path), config=pretrain.PretrainConfig(**values),
                             backbone_fn=TINY_WRN, log=lines.append)
  return result, lines


def _compute_dtypes(model):
  return {layer.dtype_policy.compute_dtype for layer in model.layers
          if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}


def test_bfloat16_pre_training_learns_with_float32_weights(tmp_path):
  result, lines = _pretrain(tmp_path, precision="mixed_bfloat16")
  assert result.losses[-1] < 0.5 * result.losses[0], result.losses
  assert any("mixed_bfloat16" in l for l in lines)
  backbone = embed.load_backbone(str(tmp_path))
  assert _compute_dtypes(backbone) == {"bfloat16"}
  assert {w.dtype for w in backbone.weights} == {"float32"}
  assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_float16_pre_training_is_loss_scaled_and_learns_under_xla(tmp_path, monkeypatch):
  optimizers = []
  original = precision.scaled_optimizer
  monkeypatch.setattr(precision, "scaled_optimizer",
                      lambda *a: optimizers.append(original(*a)) or optimizers[-1])
  result, lines = _pretrain(tmp_path, precision="mixed_float16", jit_compile=True)
  assert isinstance(optimizers[0], keras.optimizers.LossScaleOptimizer)
  assert any("mixed_float16, XLA" in l for l in lines)
  assert np.isfinite(result.losses).all()
  assert result.losses[-1] < 0.5 * result.losses[0], result.losses
  assert _compute_dtypes(embed.load_backbone(str(tmp_path))) == {"float16"}


def test_extraction_in_bfloat16_writes_float32_close_to_float32(tmp_path):
  _pretrain(tmp_path / "backbone", steps=10)
  backbone = embed.load_backbone(str(tmp_path / "backbone"))
  outputs = {}
  for name, kw in (("fp32", {}), ("bf16", dict(precision="mixed_bfloat16", jit_compile=True))):
    path = embed.write_split(backbone, tiny_source("val"), str(tmp_path / name), "tiny",
                             "center", "val", **kw)
    outputs[name] = emb_lib.load_embeddings(path).embeddings
  assert outputs["bf16"].dtype == np.float32 and outputs["fp32"].dtype == np.float32
  assert not np.array_equal(outputs["bf16"], outputs["fp32"])  # it did compute in bf16
  # bfloat16 keeps 8 bits of mantissa: about 1% of each embedding's scale.
  scale = np.abs(outputs["fp32"]).max(axis=1, keepdims=True)
  assert (np.abs(outputs["bf16"] - outputs["fp32"]) <= 0.05 * scale).all()
  cosine = np.sum(outputs["bf16"] * outputs["fp32"], 1) / (
      np.linalg.norm(outputs["bf16"], axis=1) * np.linalg.norm(outputs["fp32"], axis=1))
  assert cosine.min() > 0.999, cosine.min()


def test_unknown_precision_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="PretrainConfig.precision must be one of float32, "
                     "mixed_bfloat16, mixed_float16; got 'fp16'"):
    pretrain.PretrainConfig(precision="fp16")
  with pytest.raises(ValueError, match="write_split.precision"):
    embed.write_split(TINY_WRN(input_shape=(None, None, 1)), tiny_source("val"),
                      str(tmp_path), "tiny", "center", "val", precision="half")
