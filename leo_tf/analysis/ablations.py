"""The comparison's ablation models: each a meta-trained leo-train output.

Where an ablation's model comes from:
1. ``ablation_dirs={"maml": "runs/maml", ...}`` (``--compare_dirs``) - existing runs;
2. otherwise, with ``CompareConfig.ablation_train_steps > 0``, each missing ablation is
   meta-trained from the base run's saved config with ``gin/ablations/<name>.gin``
   applied and ``TrainConfig.num_steps`` set to that budget, into
   ``<output_dir>/ablations/<name>``. A later comparison finds the checkpoint there and
   reuses it (an interrupted run resumes; delete the directory to retrain).
Ablations with neither are left out of the table, with a message saying so. An
end-to-end base run's ablations meta-train on its own embeddings (``on_base_features``).
"""

from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from leo_tf import gin_config, saved_config
from leo_tf.analysis.compare_config import ABLATION_GIN, LABELS, CompareConfig
from leo_tf.analysis.methods import Predict, leo_predict
from leo_tf.config_checks import ConfigError
from leo_tf.leo import weights
from leo_tf.leo.run import Run, RunConfigs, open_run
from leo_tf.runtime.rundir import RunDir


def train_ablation(base_dir: str, name: str, output_dir: str, steps: int,
                   bindings: Sequence[str], extra_files: Sequence[str],
                   log: Callable[[str], None], shots: int = 1) -> str:
  """Meta-trains (or resumes, or reuses) ablation ``name`` from the base run's config."""
  from leo_tf.leo.experiment import run_experiment  # pylint: disable=g-import-not-at-top
  run_dir = RunDir.ablation(output_dir, name).path
  overrides = list(bindings) + [f"TrainConfig.num_steps = {int(steps)}",
                                f"run_experiment.output_dir = {run_dir!r}"]
  log(f"[compare] {LABELS[name]}: meta-training {steps} steps in {run_dir} "
      "(reused if already there)")
  # The ablation's own gin state while it trains: its config.gin records it.
  with gin_config.scoped(saved_config.saved_files(
      base_dir, [ABLATION_GIN[name].format(shots=shots)] + list(extra_files)), overrides):
    run_experiment(RunConfigs.from_gin(), output_dir=run_dir, evaluate_test=False, log=log)
  return run_dir


def on_base_features(base: Run) -> List[str]:
  """Bindings that meta-train an ablation of an end-to-end run as LEO on that run's own
  embeddings, the features every row of the table is tested on: an ablation that
  meta-learned a backbone of its own would be tested on another backbone's features."""
  if not base.configs.end_to_end.enabled:
    return []
  return ["EndToEndConfig.enabled = False", f"EmbeddingSource.root = {base.source.root!r}",
          "EmbeddingSource.builder = None"]


def resolve_ablation_dirs(base_dir: str, cfg: CompareConfig, given: Mapping[str, str],
                          output_dir: str, bindings: Sequence[str],
                          extra_files: Sequence[str],
                          log: Callable[[str], None], shots: int = 1) -> Dict[str, str]:
  unknown = sorted(set(given) - set(ABLATION_GIN))
  if unknown:
    raise ConfigError(f"--compare_dirs: unknown ablation names {unknown}; "
                      f"use {sorted(ABLATION_GIN)}")
  for name, path in given.items():  # before any ablation meta-trains
    try:
      saved_config.saved_files(path)
      RunDir(path).choose("best", fallback=True)
    except (gin_config.GinConfigError, FileNotFoundError) as e:
      raise ConfigError(f"--compare_dirs={name}={path}: {e}") from None
  dirs = {}
  for name in cfg.ablations:
    if name in given:
      dirs[name] = given[name]
    elif cfg.ablation_train_steps > 0:
      dirs[name] = train_ablation(base_dir, name, output_dir, cfg.ablation_train_steps,
                                  list(bindings) + list(cfg.ablation_bindings),
                                  extra_files, log, shots)
    else:
      log(f"[compare] {LABELS[name]} left out: give its run directory "
          f"(--compare_dirs={name}=DIR) or a budget "
          "(--compare_train_steps=N) to meta-train it")
  return dirs


def ablation_methods(base: Run, dirs: Mapping[str, str], dim: int, bindings: Sequence[str],
                     extra_files: Sequence[str], log: Callable[[str], None]
                     ) -> List[Tuple[str, Predict]]:
  """Each ablation run's best (else latest) checkpoint, checked against the base run."""
  methods = []
  for name, run_dir in dirs.items():
    run = open_run(run_dir, "best", bindings, extra_files, fallback=True)
    if run.dim != dim:
      weights.check_fits(run.checkpoint, run.configs.model, dim)
    _check_compatible(name, run, base, log)
    methods.append((LABELS[name], leo_predict(run.model)))
  return methods


def _check_compatible(name: str, run: Run, base: Run, log: Callable[[str], None]):
  config, base_config = run.configs.model, base.configs.model
  shape = (config.num_classes, config.num_shots)
  if shape != (base_config.num_classes, base_config.num_shots):
    raise ConfigError(f"{LABELS[name]} was trained {shape[0]}-way {shape[1]}-shot but the "
                      f"base run is {base_config.num_classes}-way "
                      f"{base_config.num_shots}-shot")
  source, base_source = run.source, base.source
  if (source.folder, source.crop) != (base_source.folder, base_source.crop):
    log(f"[compare] warning: {LABELS[name]} was trained on {source.folder}/"
        f"{source.crop}; it is evaluated on the base run's {base_source.folder}/"
        f"{base_source.crop} test episodes")
