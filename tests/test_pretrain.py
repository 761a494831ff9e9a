"""Supervised pre-training on one device: learning, resume, gin, CLI."""

import functools
import os
import re
import subprocess
import sys

import gin
import pytest
import tensorflow as tf

from leo_tf.backbone import pretrain, wrn
from _tiny_images import tiny_split

TINY_WRN = functools.partial(wrn.build_wrn, depth=10, width=1)


def _config(**overrides):
  values = dict(batch_size=16, steps=20, steps_per_loop=5, log_every=5,
                holdout_fraction=0.2, checkpoint_every=10)
  values.update(overrides)
  return pretrain.PretrainConfig(**values)


def test_loss_goes_down_and_outputs_are_written(tmp_path):
  lines = []
  result = pretrain.pretrain(tiny_split(), str(tmp_path), config=_config(),
                             backbone_fn=TINY_WRN, log=lines.append)
  assert result.final_step == 20 and result.initial_step == 0
  assert result.losses[-1] < 0.5 * result.losses[0]
  assert result.held_out_accuracy is not None and result.held_out_accuracy >= 0.5
  # Which accuracy is which, and the speed to size a schedule from, in so many words.
  assert re.fullmatch(r"step 5/20 training loss \d\.\d{4} training accuracy \d\.\d{3} lr "
                      r"\S+ [\d,]+ examples/s", lines[1])
  assert re.fullmatch(r"trained 20 steps \(320 examples\) in \d+ s: [\d,]+ examples/s "
                      r"\(what to size PretrainConfig.epochs from\)", lines[-2])
  assert lines[-1] == (
      f"held-out accuracy {result.held_out_accuracy:.3f} (on the 20% of the training "
      "classes' examples kept out of training; the training accuracy above is on augmented "
      "training batches)")
  for name in ("backbone.keras", "operative_config.gin", "config.gin"):
    assert os.path.exists(tmp_path / name), name
  assert "build_wrn.group_strides" in (tmp_path / "operative_config.gin").read_text()


def test_resume_after_interruption_continues_from_saved_step(tmp_path, monkeypatch):
  saved, save = [], tf.train.CheckpointManager.save

  def save_then_die(manager, checkpoint_number=None):
    saved.append(save(manager, checkpoint_number=checkpoint_number))
    raise KeyboardInterrupt  # the process is killed right after the first checkpoint

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    pretrain.pretrain(tiny_split(), str(tmp_path), config=_config(), backbone_fn=TINY_WRN,
                      log=lambda _: None)
  assert saved and saved[0].endswith("ckpt-10")
  assert not os.path.exists(tmp_path / "backbone.keras")
  monkeypatch.undo()

  lines = []
  result = pretrain.pretrain(tiny_split(), str(tmp_path), config=_config(),
                             backbone_fn=TINY_WRN, log=lines.append)
  assert result.initial_step == 10 and result.final_step == 20
  assert any("resumed" in l and "step 10/20" in l for l in lines)
  assert [l for l in lines if l.startswith("step ")][0].startswith("step 15/20")
  # A finished run is not trained again.
  again = pretrain.pretrain(tiny_split(), str(tmp_path), config=_config(),
                            backbone_fn=TINY_WRN, log=lambda _: None)
  assert again.initial_step == again.final_step == 20 and again.losses == []


def test_hyperparameters_come_from_gin(tmp_path):
  gin.clear_config()
  try:
    gin.parse_config("""
        PretrainConfig.batch_size = 8
        PretrainConfig.steps = 4
        PretrainConfig.steps_per_loop = 2
        PretrainConfig.holdout_fraction = 0.0
        build_wrn.depth = 10
        build_wrn.width = 1
        learning_rate_schedule.kind = 'step'
        augment.pad = 0
    """)
    result = pretrain.pretrain(tiny_split(), str(tmp_path), log=lambda _: None)
    assert result.final_step == 4 and result.held_out_accuracy is None
    operative = (tmp_path / "operative_config.gin").read_text()
    assert "learning_rate_schedule.kind = 'step'" in operative
  finally:
    gin.clear_config()


def _cli(args, cwd, timeout=300):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, "-m", "leo_tf.cli.pretrain"] + args, cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_trains_from_gin_files_and_rejects_bad_input(tmp_path):
  model_dir = tmp_path / "run"
  proc = _cli(["--gin_file=backbone/pretrain_glyphs.gin",
               "--gin_bindings=import _tiny_images",
               "--gin_bindings=run_pretraining.image_source = @tiny_source",
               f"--gin_bindings=run_pretraining.model_dir = '{model_dir}'",
               "--gin_bindings=build_wrn.width = 1",
               "--gin_bindings=PretrainConfig.steps = 4",
               "--gin_bindings=PretrainConfig.batch_size = 8"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "done: step 4" in proc.stdout
  assert (model_dir / "backbone.keras").exists()

  missing = _cli(["--gin_file=backbone/no_such_file.gin"], tmp_path)
  assert missing.returncode != 0 and "no_such_file.gin" in missing.stderr
  typo = _cli(["--gin_file=backbone/pretrain_glyphs.gin",
               "--gin_bindings=PretrainConfig.batch_sise = 3"], tmp_path)
  assert typo.returncode != 0 and "batch_sise" in typo.stderr
