"""Crash-safe restoring of tf.train checkpoints, with clear errors for the wrong model.

``tf.train.CheckpointManager`` writes a checkpoint's files first and its state file
(``checkpoint``, through an atomic rename) last, so the state never names a
half-written checkpoint. A checkpoint can still be unreadable (a disk filled up, a
copy was cut short, the state file was damaged, which TF silently treats as "no
checkpoint"), so :func:`restore_latest` tries every checkpoint in the directory, newest
first, and falls back with a warning instead of restarting from scratch.
:class:`BestRecord` keeps ``best/best.json`` describing the checkpoint in ``best/``.
"""

import json
import os
import re
import shutil
from typing import Callable, Dict, List, Optional

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from leo_tf.runtime import files

# Checkpoints track the model's weights under this name: Keras 3 does not expose
# weights kept in plain Python lists (our MLP kernels) to tf.train.Checkpoint.
MODEL_VARIABLES = "model_variables"


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a model of another configuration or input size."""


class CorruptCheckpointError(RuntimeError):
  """No checkpoint in a directory that has some could be read."""


def named_variables(model) -> Dict[str, tf.Variable]:
  """Every weight of ``model`` by its path without the model's own (uniquified) name."""
  return {v.path.split("/", 1)[-1].replace("/", "."): v for v in model.weights}


def stored_shapes(path: str) -> Dict[str, tuple]:
  """Shapes of the weights tracked under MODEL_VARIABLES in checkpoint ``path``, by name.

  Read through the object graph: a variable reachable by several paths is stored once,
  under whichever path TF met first, so its key alone does not give our name.
  """
  reader = tf.train.load_checkpoint(path)
  shapes = reader.get_variable_to_shape_map()
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  holders = [c.node_id for c in graph.nodes[0].children if c.local_name == MODEL_VARIABLES]
  out = {}
  for ref in graph.nodes[holders[0]].children if holders else []:
    keys = [a.checkpoint_key for a in graph.nodes[ref.node_id].attributes
            if a.name == "VARIABLE_VALUE"]
    if keys and keys[0] in shapes:
      out[ref.local_name] = tuple(shapes[keys[0]])
  return out


def check_compatible(path: str, variables: Dict[str, tf.Variable],
                     hint: Optional[Callable[[Dict[str, tuple]], str]] = None) -> None:
  """Raises CheckpointMismatchError naming every weight whose shape differs (or is absent)."""
  stored = stored_shapes(path)
  problems = []
  for name, v in sorted(variables.items()):
    shape = tuple(v.shape)
    if name not in stored:
      problems.append(f"{name} {shape} is not in the checkpoint")
    elif stored[name] != shape:
      problems.append(f"{name} has shape {stored[name]} in the checkpoint but {shape} "
                      "in this model")
  extra = sorted(set(stored) - set(variables))
  if extra:
    problems.append(f"the checkpoint has weights this model lacks: {', '.join(extra[:4])}"
                    + (" ..." if len(extra) > 4 else ""))
  if problems:
    extra_hint = hint(stored) if hint else ""
    raise CheckpointMismatchError(
        f"checkpoint {path} does not fit this model configuration: "
        + "; ".join(problems[:4]) + (f" (and {len(problems) - 4} more)" if len(problems) > 4
                                     else "") + (f". {extra_hint}" if extra_hint else ""))


def candidates(directory: str, manager: Optional[tf.train.CheckpointManager] = None
               ) -> List[str]:
  """Checkpoint prefixes in ``directory``, newest (highest number) first.

  Those on disk but not in the state file count too: a complete checkpoint whose state
  update was lost is still a good checkpoint, and a damaged state file hides them all.
  """
  found = set(manager.checkpoints) if manager is not None else set()
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      match = re.fullmatch(r"(.+-\d+)\.index", name)
      if match:
        found.add(os.path.join(directory, match.group(1)))
  return sorted(found, key=_number, reverse=True)


def _number(path: str) -> int:
  match = re.search(r"-(\d+)$", path)
  return int(match.group(1)) if match else -1


def _last_finished(directory: str) -> float:
  """The number of the newest checkpoint TF's state file names: TF writes that file
  last, so a newer checkpoint's write never finished. -1 without a state file (no write
  finished), infinity when it is damaged (then no write can be told unfinished)."""
  if not os.path.exists(os.path.join(directory, "checkpoint")):
    return -1
  state = tf.train.get_checkpoint_state(directory)
  return _number(state.model_checkpoint_path) if state else float("inf")


def remove_stale_temps(directory: str, log: Callable[[str], None] = print) -> List[str]:
  """Deletes the ``ckpt-<N>_temp`` folders of checkpoint writes that were killed.

  TF writes a sharded checkpoint into ``ckpt-N_temp/`` and renames its files out at
  the end, so such a folder is never a checkpoint. Only folders so named, never a link,
  and only by the process that writes the directory (the run's lock holder): another
  one's write may be under way.
  """
  removed = []
  if os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      path = os.path.join(directory, name)
      if (re.fullmatch(r"ckpt-\d+_temp", name) and os.path.isdir(path)
          and not os.path.islink(path)):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
  if removed:
    log(f"[train] removed {len(removed)} unfinished checkpoint write(s): "
        + ", ".join(os.path.basename(p) for p in removed))
  return removed


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"


def restore_latest(checkpoint: tf.train.Checkpoint, directory: str,
                   manager: Optional[tf.train.CheckpointManager] = None,
                   verify: Optional[Callable[[str], None]] = None,
                   log: Callable[[str], None] = print) -> Optional[str]:
  """Restores the newest readable checkpoint of ``directory``; None if there is none.

  ``verify(path)`` may raise CheckpointMismatchError, which is not corruption and
  propagates. Any other failure to read a checkpoint moves on to the previous one; only
  finished checkpoints that all fail are corruption (an unfinished write, e.g. on a full
  disk, must not block a rerun).
  """
  failures, finished = [], _last_finished(directory)
  for path in candidates(directory, manager):
    try:
      if verify is not None:
        verify(path)
      checkpoint.restore(path).assert_existing_objects_matched()
      return path
    except (CheckpointMismatchError, TypeError, AttributeError, NameError):
      raise  # the wrong model or our own bug: falling back would hide it
    except Exception as e:  # TF and protobuf report damaged files with many types
      unfinished = _number(path) > finished
      failures += [] if unfinished else [path]
      log(f"warning: checkpoint {path} is unreadable ({_first_line(e)}); " + (
          "its write never finished: ignoring it" if unfinished else
          "falling back to the previous one"))
  if failures:
    raise CorruptCheckpointError(
        f"no readable checkpoint in {directory} (tried {', '.join(failures)}); move the "
        "directory away to start over")
  return None


class BestRecord:
  """``best.json``: step, accuracy and CI of the best-on-validation checkpoint.

  A new best is committed in two phases: :meth:`begin` writes ``best.json.pending``, the
  caller saves the checkpoint, :meth:`commit` renames. A crash in between is finished or
  undone by :meth:`recover`, so the record and the checkpoint never disagree.
  """

  def __init__(self, path: str):
    self.path = path  # RunDir.best_record
    self.pending = self.path + ".pending"

  def accuracy(self) -> float:
    """The recorded accuracy; -1 without a record. A damaged record is a
    CorruptCheckpointError naming the file."""
    if not os.path.exists(self.path):
      return -1.0
    try:
      with open(self.path) as f:
        accuracy = float(json.load(f)["accuracy"])
      if not 0 <= accuracy <= 1:  # NaN too: no validation would ever beat it
        raise ValueError(f"accuracy {accuracy} is not between 0 and 1")
      return accuracy
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CorruptCheckpointError(
          f"{self.path} is unreadable ({type(e).__name__}: {e}); restore it, or "
          "delete it and the next validation records a new best") from None

  def begin(self, step: int, accuracy: float, ci95: float) -> None:
    files.atomic_write(self.pending, json.dumps(
        {"step": step, "accuracy": accuracy, "ci95": ci95}), fsync=True)

  def commit(self) -> None:
    os.replace(self.pending, self.path)

  def recover(self, saved: Optional[str]) -> None:
    """Finishes an interrupted commit when ``saved`` (the newest checkpoint in best/) is
    the pending step's, and drops the pending record otherwise."""
    if not os.path.exists(self.pending):
      return
    try:
      with open(self.pending) as f:
        step = int(json.load(f)["step"])
    except (ValueError, KeyError, OSError):
      step = None
    if step is not None and saved and saved.endswith(f"-{step}"):
      self.commit()
    else:
      os.remove(self.pending)
