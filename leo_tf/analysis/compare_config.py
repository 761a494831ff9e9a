"""What ``leo-eval --compare`` puts in its table: the methods, their labels, and
:class:`CompareConfig`. No TensorFlow here, so ``leo-eval --help`` lists the ablations
from this one source."""

import dataclasses
from typing import Optional, Tuple

import gin

from leo_tf.analysis.calibration import DEFAULT_NUM_BINS
from leo_tf.config_checks import ConfigError, check_types, require_at_least

# {shots}: the base run's K (the paper's variant differs between 1- and 5-shot).
ABLATION_GIN = {
    "paper": "models/leo_paper_{shots}shot.gin",
    "deterministic": "ablations/deterministic.gin",
    "random_prior": "ablations/random_prior.gin",
    "maml": "ablations/maml.gin",
    "maml_original": "ablations/maml_original.gin",
}
LABELS = {
    "leo": "LEO",
    "paper": "LEO (the paper's variant)",
    "deterministic": "LEO (deterministic)",
    "random_prior": "LEO (random prior)",
    "maml": "MAML (same features)",
    "maml_original": "MAML (original form, same features)",
    "ncm": "Nearest class mean",
    "logreg": "Logistic regression",
}
BASELINES = ("ncm", "logreg")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What ``leo-eval --compare`` puts in the table.

  Attributes:
    ablations: ablation names (keys of ABLATION_GIN) to include; "paper" is the
      paper's variant (models/leo_paper_{1,5}shot.gin) meta-trained like the others.
    ablation_train_steps: meta-training budget for ablations without a given run
      directory; 0 leaves them out instead.
    ablation_bindings: extra gin bindings for those budgeted runs.
    ensemble_samples: latent samples of the ensemble row; None takes
      LEOConfig.ensemble_samples of the base run (1 = no ensemble row).
    ensemble_seed: seed of the latent samples.
    baselines: subset of ("ncm", "logreg").
    ncm_temperature: softmax temperature of the nearest-class-mean distances; None fits
      it (NLL on ``fit_episodes`` validation episodes, as for logreg_c).
    logreg_c: inverse L2 strength of the logistic regression (sklearn's C); None picks
      the value of ``logreg_c_grid`` with the lowest NLL on validation episodes.
    logreg_steps: accelerated gradient steps of its batched solver.
    num_bins: equal-width confidence bins of ECE and the reliability diagram.
  """
  ablations: Tuple[str, ...] = ("paper", "deterministic", "random_prior", "maml")
  ablation_train_steps: int = 0
  ablation_bindings: Tuple[str, ...] = ()
  ensemble_samples: Optional[int] = None
  ensemble_seed: int = 7
  baselines: Tuple[str, ...] = BASELINES
  ncm_temperature: Optional[float] = None
  fit_episodes: int = 200
  logreg_c: Optional[float] = None
  logreg_c_grid: Tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
  logreg_steps: int = 300
  num_bins: int = DEFAULT_NUM_BINS

  def __post_init__(self):
    check_types(self)
    for name in ("ablations", "ablation_bindings", "baselines", "logreg_c_grid"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    unknown = [a for a in self.ablations if a not in ABLATION_GIN]
    unknown += [b for b in self.baselines if b not in BASELINES]
    if unknown:
      raise ConfigError(f"CompareConfig: unknown methods {unknown}; ablations are "
                        f"{sorted(ABLATION_GIN)}, baselines {list(BASELINES)}")
    require_at_least(self, 1, "num_bins")
    require_at_least(self, 0, "ablation_train_steps")
