"""Kill leo-train with SIGKILL at random moments and resume it until it finishes.

Used by tests/test_crash_safety.py (a couple of kills) and by hand for a bigger run:

  python tests/_crash_campaign.py --kills 20 --out /tmp/leo_kills
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # pylint: disable=g-import-not-at-top

from helpers import (TINY_BINDINGS, gin_bindings,  # pylint: disable=g-import-not-at-top
                     synthetic_embeddings)
from leo_tf.data.embeddings import embeddings_path, save_embeddings
from leo_tf.runtime.rundir import RunDir


def write_experiment(directory: str, steps: int = 60, checkpoint_every: int = 5,
                     validate_every: int = 10, dim: int = 8) -> str:
  """Tiny embeddings for train/val/test and a gin file for them (the tiny model and
  episodes of tests/helpers.py); returns the gin path."""
  root = os.path.join(directory, "embeddings")
  for i, split in enumerate(("train", "val", "test")):
    data = synthetic_embeddings(6, 6, dim=dim, seed=i, prefix=f"{split}c")
    save_embeddings(embeddings_path(root, "tiny", "center", split), data.embeddings,
                    data.class_ids, data.keys)
  lines = (f"EmbeddingSource.root = {root!r}", "EmbeddingSource.dataset = 'tiny'",
           "EmbeddingSource.crop = 'center'", "LEOConfig.num_shots = 1", *TINY_BINDINGS,
           *gin_bindings(TrainConfig=dict(num_steps=steps, checkpoint_every=checkpoint_every,
                                          validate_every=validate_every, log_every=10),
                         EvalConfig=dict(num_episodes=8, batch_size=8),
                         run_experiment=dict(evaluate_test=False)))
  path = os.path.join(directory, "tiny.gin")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def newest_checkpoint(directory: str) -> int:
  """Highest N of ckpt-N.index files (-1 if none); files, not the state, on purpose."""
  if not os.path.isdir(directory):
    return -1
  numbers = [int(m.group(1)) for n in os.listdir(directory)
             for m in [re.fullmatch(r"ckpt-(\d+)\.index", n)] if m]
  return max(numbers, default=-1)


def _command(gin_file: str, out: str):
  return ["leo-train", f"--gin_file={gin_file}", f"--output_dir={out}"]


def kill_once(gin_file: str, out: str, rng: random.Random, max_delay: float,
              log_file, timeout: float = 300) -> dict:
  """Starts leo-train, waits for a new checkpoint, then SIGKILLs it after a random delay."""
  latest = RunDir(out).checkpoints("latest")
  before = newest_checkpoint(latest)
  proc = subprocess.Popen(_command(gin_file, out), stdout=log_file, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + timeout
    while proc.poll() is None and newest_checkpoint(latest) <= before:
      if time.time() > deadline:
        raise TimeoutError("leo-train made no checkpoint in time")
      time.sleep(0.05)
    delay = rng.uniform(0, max_delay)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
      proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:  # only this child, never a broad kill
      proc.kill()
      proc.wait()
  return dict(killed=killed, delay=delay, returncode=proc.returncode,
              checkpoint_after=newest_checkpoint(latest))


def run_campaign(gin_file: str, out: str, kills: int, seed: int = 0,
                 max_delay: float = 0.6, timeout: float = 300) -> dict:
  """``kills`` killed runs, then one run to completion; returns what happened."""
  rng = random.Random(seed)
  os.makedirs(out, exist_ok=True)
  records = []
  with open(os.path.join(out, "campaign.log"), "ab") as log_file:
    for _ in range(kills):
      records.append(kill_once(gin_file, out, rng, max_delay, log_file, timeout))
    final = subprocess.run(_command(gin_file, out), stdout=log_file,
                           stderr=subprocess.STDOUT, timeout=timeout)
  with open(os.path.join(out, "campaign.log"), errors="replace") as f:
    log = f.read()
  return dict(records=records, final_returncode=final.returncode, log=log)


def model_weights(checkpoint_prefix: str):
  """{name: array} of the model weights in a checkpoint (read, not restored)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.startswith(("model_variables/", "model/"))}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--out", default="/tmp/leo_kill_campaign")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  gin_file = write_experiment(args.out, steps=args.steps)
  run_dir = os.path.join(args.out, "run")
  result = run_campaign(gin_file, run_dir, args.kills, args.seed, max_delay=1.5)
  killed = sum(r["killed"] for r in result["records"])
  print(f"{killed} of {args.kills} runs killed mid-flight; final exit code "
        f"{result['final_returncode']}; newest checkpoint "
        f"{newest_checkpoint(RunDir(run_dir).checkpoints('latest'))}")
  print("resumed lines:", len(re.findall(r"resumed from", result["log"])),
        "fallbacks:", len(re.findall(r"falling back", result["log"])))
  for r in result["records"]:
    print(r)


if __name__ == "__main__":
  main()
