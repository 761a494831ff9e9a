"""Wide ResNet shapes and sizes."""

import numpy as np
import pytest

from leo_tf.backbone import wrn


def test_wrn_28_10_has_640_outputs_and_36_5m_parameters():
  model = wrn.build_wrn(depth=28, width=10, input_shape=(None, None, 3))
  assert model.output.shape[-1] == 640
  # Zagoruyko & Komodakis report 36.5 M for WRN-28-10 (with a 10-way head: 36,479,194).
  assert wrn.count_params(model) == 36_472_784
  head = wrn.add_classifier_head(model, 10)
  assert wrn.count_params(head) == 36_479_194


def test_strides_change_resolution_not_parameters():
  cifar = wrn.build_wrn(depth=10, width=2, input_shape=(32, 32, 1), group_strides=(1, 2, 2))
  paper = wrn.build_wrn(depth=10, width=2, input_shape=(32, 32, 1), group_strides=(2, 2, 2))
  assert wrn.count_params(cifar) == wrn.count_params(paper) == 302_128
  assert cifar.get_layer("final_relu").output.shape[1:3] == (8, 8)
  assert paper.get_layer("final_relu").output.shape[1:3] == (4, 4)


def test_small_wrn_embeds_any_image_size():
  model = wrn.build_wrn(depth=10, width=1, dropout=0.3, input_shape=(None, None, 1))
  for size in (16, 28):
    out = model(np.zeros((2, size, size, 1), np.float32), training=False)
    assert out.shape == (2, 64)


@pytest.mark.parametrize("depth", [8, 12, 29])
def test_depth_must_be_6n_plus_4(depth):
  with pytest.raises(ValueError, match="6n \\+ 4"):
    wrn.build_wrn(depth=depth, width=1)
