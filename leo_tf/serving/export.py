"""SavedModel export of a meta-trained LEO for TF Serving, adaptation inside the graph.

Layout: ``<export_base>/<version>/`` (TF Serving loads the largest integer version) with
  saved_model.pb, variables/          the graph and the model's (and backbone's) weights
  assets.extra/tf_serving_warmup_requests   PredictionLogs replayed at load
  assets.extra/leo_export.json, config.gin  what was exported, from where, with which config

Signatures (see docs/serving.md):
  serving_default   support_embeddings [N*K, d] float32, support_labels [N*K] int64,
                    query_embeddings [M, d] float32 -> probabilities [M, N], labels [M]
  classify_images   the same with support_images / query_images uint8 [n, H, W, C]
                    (only when a pre-trained backbone is exported with the model)
  adapt             support_embeddings, support_labels -> weights [N, d], bias [N]
  classify          weights, bias, query_embeddings -> probabilities [M, N], labels [M]

Export goes through ``keras.export.ExportArchive``, which saves the raw tf.Variables, so
the result also loads on the TF1 Session path (TF Serving, ``saved_model_cli run``).
No jit_compile: TF Serving runs XLA:CPU only with --xla_cpu_compilation_enabled.
"""

import dataclasses
import json
import os
import shutil
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from leo_tf.runtime import files
from leo_tf.serving import graph, warmup

SERVING_DEFAULT = "serving_default"
IMAGES_SIGNATURE = "classify_images"
ADAPT_SIGNATURE = "adapt"
CLASSIFY_SIGNATURE = "classify"
METADATA_FILE = "leo_export.json"
ASSETS_EXTRA = "assets.extra"


class ExportError(ValueError):
  """The export cannot be written as asked (bad version, mismatched backbone, ...)."""


# ------------------------------------------------------------------ versions


def next_version(export_base: str) -> int:
  """One more than the largest integer version directory under ``export_base``, or 1."""
  names = os.listdir(export_base) if os.path.isdir(export_base) else []
  versions = [int(d) for d in names
              if d.isdigit() and os.path.isdir(os.path.join(export_base, d))]
  return max(versions, default=0) + 1


# ------------------------------------------------------------------ the archive


def _specs(shape, dtype, what: str):
  """A signature's inputs: support_<what>, support_labels, query_<what>."""
  return [tf.TensorSpec(shape, dtype, name=f"support_{what}"),
          tf.TensorSpec([None], tf.int64, name="support_labels"),
          tf.TensorSpec(shape, dtype, name=f"query_{what}")]


def build_archive(model, normalize: bool, backbone: Optional[keras.Model] = None,
                  preprocess: Optional[Callable] = None,
                  limits: graph.ServingLimits = graph.ServingLimits()
                  ) -> keras.export.ExportArchive:
  """An ExportArchive with the embedding signature (and the image one with a backbone)."""
  archive = keras.export.ExportArchive()
  archive.track(model)
  embeddings = _specs([None, model.dim], tf.float32, "embeddings")
  archive.add_endpoint(SERVING_DEFAULT, graph.embedding_endpoint(model, normalize, limits),
                       input_signature=embeddings)
  archive.add_endpoint(ADAPT_SIGNATURE, graph.adapt_endpoint(model, normalize, limits),
                       input_signature=embeddings[:2])
  archive.add_endpoint(CLASSIFY_SIGNATURE, graph.classify_endpoint(model, normalize, limits),
                       input_signature=[tf.TensorSpec([None, model.dim], tf.float32, "weights"),
                                        tf.TensorSpec([None], tf.float32, "bias"),
                                        embeddings[2]])
  if backbone is not None:
    out_dim = backbone.output_shape[-1]
    if out_dim != model.dim:
      raise ExportError(f"the backbone outputs {out_dim}-d embeddings but the LEO model "
                        f"was meta-trained on {model.dim}-d ones")
    archive.track(backbone)
    images = _specs([None, *backbone.input_shape[1:]], tf.uint8, "images")
    archive.add_endpoint(IMAGES_SIGNATURE,
                         graph.image_endpoint(model, backbone, preprocess, normalize, limits),
                         input_signature=images)
  return archive


def warmup_requests(dim: int, backbone: Optional[keras.Model] = None, seed: int = 0,
                    limits: graph.ServingLimits = graph.ServingLimits()
                    ) -> List[Tuple[str, Dict[str, np.ndarray]]]:
  """Typical requests: 5-way 1-shot and 5-shot with 75 queries, the 5-shot support set
  adapted and one query classified (and one image task), cut down to what ``limits``
  allow (a refused warmup request fails the model's load)."""
  rng = np.random.default_rng(seed)
  ways = min(5, limits.max_classes, limits.max_support)
  queries = min(75, limits.max_queries)
  requests = []
  for shots in sorted({1, min(5, limits.max_support // ways)}):
    requests.append((SERVING_DEFAULT, dict(
        support_embeddings=rng.normal(size=(ways * shots, dim)).astype(np.float32),
        support_labels=np.repeat(np.arange(ways, dtype=np.int64), shots),
        query_embeddings=rng.normal(size=(queries, dim)).astype(np.float32))))
  support = requests[-1][1]
  requests.append((ADAPT_SIGNATURE, dict(support_embeddings=support["support_embeddings"],
                                         support_labels=support["support_labels"])))
  requests.append((CLASSIFY_SIGNATURE, dict(
      weights=rng.normal(size=(ways, dim)).astype(np.float32),
      bias=np.zeros(ways, np.float32),
      query_embeddings=support["query_embeddings"][:min(1, queries)])))
  if backbone is not None:
    # Any size works where the backbone leaves it open: 32, or the largest one served.
    side = min(32, limits.max_image_size)
    h, w, c = [s or side for s in backbone.input_shape[1:]]
    requests.append((IMAGES_SIGNATURE, dict(
        support_images=rng.integers(0, 256, size=(ways, h, w, c), dtype=np.uint8),
        support_labels=np.arange(ways, dtype=np.int64),
        query_images=rng.integers(0, 256, size=(min(5, queries), h, w, c), dtype=np.uint8))))
  return requests


def write_export(model, directory: str, normalize: bool,
                 backbone: Optional[keras.Model] = None,
                 preprocess: Optional[Callable] = None,
                 metadata: Optional[dict] = None,
                 extra_files: Optional[Dict[str, str]] = None,
                 limits: graph.ServingLimits = graph.ServingLimits()) -> str:
  """Writes the SavedModel into ``directory`` (which must not exist), atomically.

  It is built in a sibling temporary directory and renamed at the end: TF Serving
  polls the export base and must never see a half-written version.
  """
  if os.path.exists(directory):
    raise ExportError(f"{directory} already exists; choose another --model_version")
  with files.atomic_directory(directory) as tmp:
    archive = build_archive(model, normalize, backbone, preprocess, limits)
    archive.write_out(tmp, verbose=False)
    extra = os.path.join(tmp, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    warmup.write(os.path.join(extra, warmup.WARMUP_FILE),
                 warmup_requests(model.dim, backbone, limits=limits))
    signatures = [SERVING_DEFAULT, ADAPT_SIGNATURE, CLASSIFY_SIGNATURE] + (
        [IMAGES_SIGNATURE] if backbone is not None else [])
    info = dict(dim=model.dim, l2_normalize=normalize, signatures=signatures,
                leo_config=dataclasses.asdict(model.config),
                serving_limits=dataclasses.asdict(limits), **(metadata or {}))
    with open(os.path.join(extra, METADATA_FILE), "w") as f:
      json.dump(info, f, indent=2, sort_keys=True)
    for name, source in (extra_files or {}).items():
      shutil.copyfile(source, os.path.join(extra, name))
  return directory


# ------------------------------------------------------------------ from a training run


def load_backbone(path: str) -> keras.Model:
  """A saved Keras backbone: a .keras file, or a leo-pretrain directory holding one."""
  if os.path.isdir(path):
    from leo_tf.backbone.pretrain import BACKBONE_FILE  # pylint: disable=import-outside-toplevel
    path = os.path.join(path, BACKBONE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no saved backbone at {path}")
  if not zipfile.is_zipfile(path):
    raise ExportError(f"--backbone: {path} is not a saved Keras model (a .keras zip file, "
                      "as leo-pretrain writes)")
  try:
    return keras.saving.load_model(path, compile=False)  # safe mode: no Python code runs
  except (ValueError, KeyError, TypeError) as error:
    if "`Lambda` layer" in str(error):
      raise ExportError(f"--backbone: {path} holds a Lambda layer, whose Python code Keras "
                        "refuses to load; rebuild the backbone from standard layers") from None
    raise ExportError(f"--backbone: {path} cannot be loaded as a Keras model "
                      f"({type(error).__name__}: {str(error).splitlines()[0]})") from None


def export_checkpoint(checkpoint_dir: str, export_base: str, version: Optional[int] = None,
                      which: str = "best", backbone_path: Optional[str] = None,
                      bindings=(), log: Callable[[str], None] = print) -> str:
  """leo-export: the run's checkpoint and saved gin config -> ``<export_base>/<version>``.

  ``backbone_path`` adds the classify_images signature; an end-to-end run has it by
  default, with the backbone it meta-trained (``Run.backbone``).

  The saved config (plus ``bindings``) gives the test-time values: inner_steps_test,
  finetune_steps_test, and EmbeddingSource.l2_normalize for the in-graph normalisation;
  ``bindings`` may set the request limits (``ServingLimits.max_support=2000``).
  """
  # Imported here: opening a run registers every configurable of the package.
  from leo_tf import saved_config  # pylint: disable=import-outside-toplevel
  from leo_tf.leo.run import open_run  # pylint: disable=import-outside-toplevel
  from leo_tf.runtime import outputs  # pylint: disable=import-outside-toplevel
  if version is not None and version < 1:
    raise ExportError(f"--model_version must be a positive integer, got {version}")
  run = open_run(checkpoint_dir, which, bindings, log=log)
  outputs.writable_directory(export_base, "--export_base")
  version = version or next_version(export_base)  # (0 was refused above)
  model, config, dim = run.model, run.configs.model, run.dim
  normalize = run.configs.source.l2_normalize  # (run.source may extract embeddings)
  backbone, preprocess = None, None
  if backbone_path:
    backbone = load_backbone(backbone_path)
  elif run.configs.end_to_end.enabled:
    # The backbone meta-trained with LEO, whose features the model was trained and
    # tested on; the pre-trained one it started from would give other features.
    backbone, backbone_path = run.backbone(), run.directory.backbone
  if backbone is not None:
    from leo_tf.backbone import inputs  # pylint: disable=import-outside-toplevel
    preprocess = inputs.preprocess
  directory = os.path.join(export_base, str(version))
  metadata = dict(checkpoint=run.checkpoint, which=which, backbone=backbone_path,
                  version=version)
  # The limits as --gin_bindings set them (read like the run's other configs).
  limits = saved_config.read_saved(run.directory, graph.ServingLimits, bindings)
  config_file = run.directory.config
  write_export(model, directory, normalize, backbone, preprocess, metadata,
               {os.path.basename(config_file): config_file}, limits)
  log(f"[export] {config.num_classes}-way-trained LEO ({dim}-d, "
      f"{config.inner_steps_test} latent + {config.finetune_steps_test} fine-tuning steps, "
      f"l2_normalize={normalize}; at most N={limits.max_classes}, "
      f"N*K={limits.max_support}, M={limits.max_queries})"
      + (f", classify_images through {backbone_path}" if backbone_path else "")
      + f" -> {directory}")
  return directory
