"""Runs a tiny pre-training under a tf.distribute strategy in a fresh process.

  python tests/_distributed_worker.py mirrored <model_dir>
  TF_CONFIG=... python tests/_distributed_worker.py multi_worker <model_dir>

Splitting the CPU into logical devices must happen before TensorFlow runs any op,
which is why this is a separate process. Prints one JSON line starting 'RESULT '.
"""

import functools
import json
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(kind: str, model_dir: str) -> None:
  if kind == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from _tiny_images import tiny_split  # pylint: disable=g-import-not-at-top
  from leo_tf.backbone import pretrain, strategy as strategy_lib, wrn

  strategy = strategy_lib.make_strategy(
      kind, devices=["/cpu:0", "/cpu:1"] if kind == "mirrored" else None)
  config = pretrain.PretrainConfig(batch_size=16, steps=30, steps_per_loop=5, log_every=5,
                                   holdout_fraction=0.2, checkpoint_every=10)
  result = pretrain.pretrain(tiny_split(), model_dir, config=config, strategy=strategy,
                             backbone_fn=functools.partial(wrn.build_wrn, depth=10, width=1))
  print("RESULT " + json.dumps({
      "replicas": strategy.num_replicas_in_sync,
      "losses": result.losses,
      "held_out_accuracy": result.held_out_accuracy,
      "backbone_path": result.backbone_path,
      "final_step": result.final_step,
  }), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
