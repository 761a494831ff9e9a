"""Hyperparameters of the LEO model, bound through gin.

Defaults are the authors' final code (docs/design.md) for 5-way 1-shot; the gin
files in ``gin/`` switch to the paper's variant, the tuned values and the ablations.
"""

import dataclasses
import math
import typing
from typing import Optional, Tuple

import gin

INITIALISATIONS = ("encoder", "random_prior", "maml")
INNER_GRADIENTS = ("closed_form", "tape")
LATENT_CODES = ("per_shot", "per_class")
INNER_LOSSES = ("sum", "mean")


class ConfigError(ValueError):
  """A configuration value is out of range or inconsistent."""


def require_at_least(config, minimum, *names: str) -> None:
  """ConfigError naming the first field of ``config`` in ``names`` below ``minimum``."""
  for name in names:
    if getattr(config, name) < minimum:
      raise ConfigError(f"{type(config).__name__}.{name} must be >= {minimum}, "
                        f"got {getattr(config, name)}")


def require_one_of(config, name: str, choices) -> None:
  if getattr(config, name) not in choices:
    raise ConfigError(f"{type(config).__name__}.{name} must be one of {tuple(choices)}, "
                      f"got {getattr(config, name)!r}")


def _matches(value, hint) -> bool:
  """Whether ``value`` (as gin passes it: lists for tuples) fits the annotation ``hint``."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  if origin is typing.Union:
    return any(_matches(value, a) for a in args)
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      return False
    if len(args) == 2 and args[1] is Ellipsis:
      return all(_matches(v, args[0]) for v in value)
    return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
  return True  # callables and anything richer: the configurable checks them itself


def _describe(hint) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Union:
    return " or ".join("None" if a is type(None) else _describe(a) for a in args)
  if origin is tuple:
    plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    return (f"a list of {plural.get(args[0], args[0])}" if args[-1] is Ellipsis
            else "a list")
  return {bool: "True or False", int: "an integer", float: "a number",
          str: "a string"}.get(hint, str(hint))


def check_types(config) -> None:
  """Every field of a gin-bound dataclass holds its annotated type, so a wrong binding
  fails naming the field (``LEOConfig.latent_size = 'abc'``, ``num_steps = 10.5``)
  instead of deep inside TensorFlow, or not at all."""
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if not _matches(value, hints[field.name]):
      raise ConfigError(f"{type(config).__name__}.{field.name} must be "
                        f"{_describe(hints[field.name])}, got {value!r}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LEOConfig:
  """Everything that shapes the LEO model and its inner loops.

  Attributes:
    num_classes: N, classes per episode.
    num_shots: K, support examples per class.
    latent_size: size of a class's latent code z.
    encoder_hidden: hidden layer sizes of the per-example encoder (ReLU between layers).
      Empty means linear, as in the final code and the paper's 1-shot variant.
    use_relation_net: pairwise relation network on the encoded support set.
    relation_hidden: hidden sizes of the relation network; its output is 2 * latent_size.
    decoder_hidden: hidden sizes of the decoder from z to classifier weights.
    initialisation: "encoder" (LEO), "random_prior" (z0 ~ N(0, I), the paper's
      ablation) or "maml" (no latent space: a learned weight initialisation adapted
      directly, MAML on the same features).
    stochastic: sample z and the weights in training (False: the deterministic ablation).
    latent_codes: "per_shot" (the final code: in training each of the K shots of a class
      draws its own z, the logits average their K decoded weights, and each copy steps
      lr/K times the gradient of the summed support loss; at test the K copies are the
      mean and step alike) or "per_class" (the paper's eq.: one z_n per class and
      z'_n = z_n - lr * grad, so lr = 1 is a step K times the per-shot one). The two are
      the same at 1-shot.
    inner_loss: the inner loops' objective over the support set: "sum" of the
      cross-entropies (LEO) or their "mean" (MAML's original form), i.e. steps 1/(N*K)
      as large.
    classifier_bias: a per-class bias in the softmax classifier, learned as an
      initialisation and adapted by the fine-tuning steps with the fixed step
      finetune_lr_init (MAML's original form; only with initialisation = "maml").
    inner_steps_train / inner_steps_test: latent-space adaptation steps.
    finetune_steps_train / finetune_steps_test: weight-space fine-tuning steps.
    inner_lr_init, learn_inner_lr: latent step size, a learned [latent_size] vector or fixed.
    finetune_lr_init, learn_finetune_lr: weight-space step size ([dim] vector or fixed).
    first_order: stop gradients through inner-loop gradients (default: second order).
    dropout_rate: dropout on the input embeddings, redrawn at every use.
    latent_stddev_offset: stddev = exp(u) - (1 - offset) for z.
    weight_stddev_offset: the same for the decoded weights; None -> sqrt(2 / (dim + N)).
    kl_weight: beta, weight of KL(q(z | D_train) || N(0, I)).
    encoder_penalty_weight: gamma, weight of ||stop_grad(z_final) - z_initial||^2.
    l2_weight: lambda1, 0.5 * lambda1 * sum of squared network weights (final code).
    orthogonality_weight: lambda2, mean squared off-identity decoder correlations.
    paper_regularizer_weight: lambda of the paper's R = ||enc||^2 + ||dec||^2 +
      ||enc^T enc - I||_1 + ||dec dec^T - I||_1 (layer-wise for MLPs).
    ensemble_samples: test-time ensemble over this many latent samples (1 = means only).
    inner_gradients: how the inner loops get their gradients: "closed_form" (the
      formulas of leo_tf/leo/closed_form.py, ~3x fewer graph ops; the latent loop needs a
      linear decoder and uses the tape otherwise) or "tape" (tf.GradientTape, the
      reference). Same numbers to float tolerance; the outer tape differentiates both.
  """
  num_classes: int = 5
  num_shots: int = 1
  latent_size: int = 64
  encoder_hidden: Tuple[int, ...] = ()
  use_relation_net: bool = True
  relation_hidden: Tuple[int, ...] = (128, 128)
  decoder_hidden: Tuple[int, ...] = ()
  initialisation: str = "encoder"
  stochastic: bool = True
  latent_codes: str = "per_shot"
  inner_loss: str = "sum"
  classifier_bias: bool = False
  inner_steps_train: int = 5
  inner_steps_test: int = 5
  finetune_steps_train: int = 5
  finetune_steps_test: int = 5
  inner_lr_init: float = 1.0
  learn_inner_lr: bool = True
  finetune_lr_init: float = 0.001
  learn_finetune_lr: bool = True
  first_order: bool = False
  dropout_rate: float = 0.3
  latent_stddev_offset: float = 0.0
  weight_stddev_offset: Optional[float] = None
  kl_weight: float = 0.001
  encoder_penalty_weight: float = 1e-9
  l2_weight: float = 1e-8
  orthogonality_weight: float = 1e-3
  paper_regularizer_weight: float = 0.0
  ensemble_samples: int = 1
  inner_gradients: str = "closed_form"

  def __post_init__(self):
    check_types(self)
    # gin passes lists for tuple bindings; keep the dataclass hashable and uniform.
    for name in ("encoder_hidden", "relation_hidden", "decoder_hidden"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    self.validate()

  def validate(self):
    positive = ("num_classes", "num_shots", "latent_size", "ensemble_samples")
    for name in positive:
      if getattr(self, name) < 1:
        raise ConfigError(f"LEOConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.num_classes < 2:
      raise ConfigError(f"LEOConfig.num_classes must be >= 2, got {self.num_classes}")
    for name in ("inner_steps_train", "inner_steps_test", "finetune_steps_train",
                 "finetune_steps_test"):
      if getattr(self, name) < 0:
        raise ConfigError(f"LEOConfig.{name} must be >= 0, got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"LEOConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if self.initialisation not in INITIALISATIONS:
      raise ConfigError(f"LEOConfig.initialisation must be one of {INITIALISATIONS}, "
                        f"got {self.initialisation!r}")
    if self.latent_codes not in LATENT_CODES:
      raise ConfigError(f"LEOConfig.latent_codes must be one of {LATENT_CODES}, "
                        f"got {self.latent_codes!r}")
    if self.inner_loss not in INNER_LOSSES:
      raise ConfigError(f"LEOConfig.inner_loss must be one of {INNER_LOSSES}, "
                        f"got {self.inner_loss!r}")
    if self.classifier_bias and (self.initialisation != "maml" or self.learn_finetune_lr):
      raise ConfigError("LEOConfig.classifier_bias needs initialisation = 'maml' and "
                        "learn_finetune_lr = False (LEO's decoder makes no bias; the bias "
                        "steps with the fixed finetune_lr_init)")
    if self.inner_gradients not in INNER_GRADIENTS:
      raise ConfigError(f"LEOConfig.inner_gradients must be one of {INNER_GRADIENTS}, "
                        f"got {self.inner_gradients!r}")
    for name in ("kl_weight", "encoder_penalty_weight", "l2_weight",
                 "orthogonality_weight", "paper_regularizer_weight"):
      if getattr(self, name) < 0:
        raise ConfigError(f"LEOConfig.{name} must be >= 0, got {getattr(self, name)}")

  def weight_offset(self, dim: int) -> float:
    if self.weight_stddev_offset is not None:
      return self.weight_stddev_offset
    return math.sqrt(2.0 / (dim + self.num_classes))

  def inner_steps(self, training: bool) -> int:
    return self.inner_steps_train if training else self.inner_steps_test

  def finetune_steps(self, training: bool) -> int:
    return self.finetune_steps_train if training else self.finetune_steps_test
