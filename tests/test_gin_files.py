"""Every shipped .gin file parses, and every LEO configuration in them builds a model."""

import glob
import os

import gin
import pytest

from leo_tf import gin_config
from leo_tf.leo.config import LEOConfig
from leo_tf.leo.model import build_leo

GIN_FILES = sorted(os.path.relpath(p, gin_config.GIN_DIR)
                   for p in glob.glob(os.path.join(gin_config.GIN_DIR, "**", "*.gin"),
                                      recursive=True))


def test_there_are_gin_files():
  assert len(GIN_FILES) >= 20
  assert "experiments/mini_final_1shot.gin" in GIN_FILES


@pytest.mark.parametrize("path", GIN_FILES)
def test_gin_file_parses_and_builds(path):
  gin_config.parse([path], ["IMAGES_ROOT = '/images'"])  # the images files' one binding
  config = LEOConfig()  # validates every bound value
  if path.startswith("experiments/"):
    # A small embedding size keeps this fast; the layer shapes follow the config.
    model = build_leo(config, dim=32)
    assert model.inner_lr.shape == (config.latent_size,)


def test_experiment_files_bind_the_paper_and_final_values():
  gin_config.parse(["experiments/mini_final_5shot.gin"])
  c = LEOConfig()
  assert (c.num_shots, c.use_relation_net, c.inner_steps_train, c.finetune_steps_test) == (5, True, 5, 5)
  assert c.orthogonality_weight == pytest.approx(1.523998e-3)
  gin_config.parse(["experiments/mini_paper_5shot.gin"])
  c = LEOConfig()
  assert c.encoder_hidden == (256,) and c.decoder_hidden == (256,)
  assert (c.inner_steps_train, c.inner_steps_test, c.finetune_steps_train) == (3, 6, 0)
  assert not c.learn_inner_lr and c.use_relation_net is False
  assert c.paper_regularizer_weight > 0


@pytest.mark.parametrize("shots, outer_lr, kl_weight", [(1, 1e-3, 1e-4), (5, 5.068e-4, 1.322e-3)])
def test_typeface_experiments_take_the_benchmark_and_its_tuned_values(shots, outer_lr,
                                                                      kl_weight):
  from leo_tf.data.source import EmbeddingSource
  from leo_tf.leo.config import TrainConfig
  gin_config.parse([f"experiments/typefaces_5way{shots}shot.gin"])
  assert EmbeddingSource().dataset == "typefaces" and LEOConfig().num_shots == shots
  assert gin.query_parameter("image_source.kind") == "typefaces"
  assert TrainConfig().outer_lr == pytest.approx(outer_lr)  # not training/glyphs.gin's
  assert LEOConfig().kl_weight == pytest.approx(kl_weight)


def test_command_line_binding_overrides_a_file():
  gin_config.parse(["experiments/mini_final_1shot.gin"], ["LEOConfig.kl_weight = 0.5"])
  assert LEOConfig().kl_weight == 0.5


def test_unknown_binding_names_the_file(tmp_path):
  bad = tmp_path / "typo.gin"
  bad.write_text("include 'models/leo_final.gin'\nLEOConfig.latnet_size = 3\n")
  with pytest.raises(gin_config.GinConfigError, match=r"typo\.gin.*latnet_size"):
    gin_config.parse([str(bad)])
  with pytest.raises(gin_config.GinConfigError, match="binding 'LEOConfg.kl_weight = 1'"):
    gin_config.parse([], ["LEOConfg.kl_weight = 1"])
  with pytest.raises(gin_config.GinConfigError, match="gin file not found"):
    gin_config.parse(["experiments/nope.gin"])


def test_a_scoped_read_leaves_the_callers_gin_state_as_it_was():
  gin_config.parse(["experiments/mini_final_1shot.gin"], ["LEOConfig.kl_weight = 0.5"])
  before = gin.config_str()
  assert LEOConfig().num_shots == 1
  with gin_config.scoped(["experiments/mini_final_5shot.gin"]):
    assert LEOConfig().num_shots == 5 and LEOConfig().kl_weight != 0.5
  assert gin.config_str() == before and gin.config_is_locked()
  assert LEOConfig().num_shots == 1 and LEOConfig().kl_weight == 0.5
  with pytest.raises(gin_config.GinConfigError, match="latnet_size"):
    with gin_config.scoped([], ["LEOConfig.latnet_size = 3"]):
      pass
  assert gin.config_str() == before and LEOConfig().kl_weight == 0.5


def teardown_module():
  gin.clear_config()


@pytest.mark.parametrize("shots", [1, 5])
def test_images_experiments_read_a_folder_of_natural_images(shots):
  from leo_tf.data.source import EmbeddingSource
  gin_config.parse([f"experiments/images_5way{shots}shot.gin"], ["IMAGES_ROOT = '/images'"])
  assert gin.query_parameter("image_source.kind") == "folder"
  assert gin.query_parameter("%IMAGES_ROOT") == "/images"
  assert gin.query_parameter("augment.flip") is True           # natural images mirror
  assert gin.query_parameter("image_source.image_size") == 48
  source = EmbeddingSource()
  assert source.derived_from == "/images" and source.folder.startswith("images_images_")
  assert LEOConfig().num_shots == shots
  assert gin.query_parameter("run_experiment.after_test").selector == "compare_to_baselines"
