"""Hyperparameters of the LEO model and of its meta-training, bound through gin.

Defaults are the authors' final code (docs/design.md) for 5-way 1-shot; the gin
files in ``gin/`` switch to the paper's variant, the tuned values and the ablations.
"""

import dataclasses
import math
import os
from typing import Optional, Tuple

import gin

from leo_tf.config_checks import (ConfigError, check_types, require_at_least, require_one_of,
                                  require_positive)

INITIALISATIONS = ("encoder", "random_prior", "maml")
INNER_GRADIENTS = ("closed_form", "tape")
LATENT_CODES = ("per_shot", "per_class")
INNER_LOSSES = ("sum", "mean")
PRIOR_STARTS = ("mean", "sample")
# Meta-training keeps four float32 copies of every weight (the weights, their gradients and
# Adam's two moments) before any activation. A model whose copies need more than
# MEMORY_FRACTION of the machine's memory is refused before it is built (check_size).
BYTES_PER_WEIGHT, MEMORY_FRACTION = 16, 0.5
MACHINE_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # bytes


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
    prior_start: where the random prior's adaptation starts without a sampled code (at
      evaluation): "mean", z0 = 0, or "sample", one fixed draw of N(0, I). The mean is
      the analogue of LEO's posterior mean, but a ReLU decoder without biases (the
      paper's 5-shot variant) has a zero gradient at z = 0 and cannot adapt from it.
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
  prior_start: str = "mean"
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
    require_at_least(self, 1, "num_shots", "latent_size", "ensemble_samples")
    require_at_least(self, 2, "num_classes")
    require_at_least(self, 0, "inner_steps_train", "inner_steps_test",
                     "finetune_steps_train", "finetune_steps_test", "kl_weight",
                     "encoder_penalty_weight", "l2_weight", "orthogonality_weight",
                     "paper_regularizer_weight")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"LEOConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    require_one_of(self, "initialisation", INITIALISATIONS)
    require_one_of(self, "prior_start", PRIOR_STARTS)
    require_one_of(self, "latent_codes", LATENT_CODES)
    require_one_of(self, "inner_loss", INNER_LOSSES)
    require_one_of(self, "inner_gradients", INNER_GRADIENTS)
    if self.classifier_bias and (self.initialisation != "maml" or self.learn_finetune_lr):
      raise ConfigError("LEOConfig.classifier_bias needs initialisation = 'maml' and "
                        "learn_finetune_lr = False (LEO's decoder makes no bias; the bias "
                        "steps with the fixed finetune_lr_init)")
    self.check_size(dim=1)  # the embedding size is not known yet: a lower bound

  def parameter_count(self, dim: int) -> int:
    """Weights of the model on ``dim``-d embeddings: the kernels leo/layers.py builds for
    this variant (or MAML's learned weights and bias) and the two step-size vectors."""
    z, encoder = self.latent_size, self.initialisation == "encoder"
    relation = encoder and self.use_relation_net
    layers = [(z, *self.decoder_hidden, 2 * dim) if self.initialisation != "maml"
              else (self.num_classes, dim + self.classifier_bias)]  # a class's row and bias
    if encoder:
      layers.append((dim, *self.encoder_hidden, z if relation else 2 * z))
    if relation:
      layers.append((2 * z, *self.relation_hidden, 2 * z))
    return z + dim + sum(a * b for widths in layers for a, b in zip(widths, widths[1:]))

  def check_size(self, dim: int):
    """ConfigError naming the widest size binding if meta-training would need more than
    MEMORY_FRACTION of this machine's memory for the weights alone."""
    count = self.parameter_count(dim)
    if BYTES_PER_WEIGHT * count <= MEMORY_FRACTION * MACHINE_MEMORY:
      return
    widths = dict(num_classes=(self.num_classes,), latent_size=(self.latent_size,),
                  encoder_hidden=self.encoder_hidden, relation_hidden=self.relation_hidden,
                  decoder_hidden=self.decoder_hidden)
    name = max(widths, key=lambda n: max(widths[n], default=0))
    raise ConfigError(
        f"LEOConfig.{name} = {getattr(self, name)} makes a model of {count:.3g} weights: "
        f"meta-training needs {BYTES_PER_WEIGHT * count / 2**30:,.1f} GB for them "
        f"(weights, gradients, Adam's moments), more than {MEMORY_FRACTION:.0%} of this "
        f"machine's {MACHINE_MEMORY / 2**30:,.1f} GB; use smaller sizes")

  def weight_offset(self, dim: int) -> float:
    if self.weight_stddev_offset is not None:
      return self.weight_stddev_offset
    return math.sqrt(2.0 / (dim + self.num_classes))

  def inner_steps(self, training: bool) -> int:
    return self.inner_steps_train if training else self.inner_steps_test

  def finetune_steps(self, training: bool) -> int:
    return self.finetune_steps_train if training else self.finetune_steps_test


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The outer loop (leo/trainer.py). Defaults follow the authors' final code."""
  outer_lr: float = 1e-4                 # Adam's learning rate
  meta_batch_size: int = 12              # tasks per outer step (over all replicas)
  num_queries: int = 15                  # query examples per class in training episodes
  num_steps: int = 100000                # outer steps in total
  validate_every: int = 1000             # steps between validations (and best checks)
  num_val_episodes: int = 2000           # episodes per validation
  val_num_queries: Optional[int] = 15    # None: every remaining example is a query
  val_batch_size: int = 100              # validation episodes per batch
  log_every: int = 100                   # steps between progress lines and summaries
  checkpoint_every: int = 1000           # steps between latest/ checkpoints
  clip_value: float = 0.1                # per-tensor gradient clipping by value (0: off)
  clip_norm: float = 0.1                 # then by norm (0: off)
  seed: int = 0                          # episodes, noise and initial weights
  # The authors' reported numbers: the validation classes join meta-training, and (with
  # select_on_val) validation still runs on them and picks the checkpoint that is tested,
  # i.e. model selection on classes also trained on. select_on_val=False: no validation,
  # the last step is tested.
  train_on_val: bool = False
  select_on_val: bool = True
  # Keras defaults to 1e-7; the authors' TF1 AdamOptimizer used 1e-8.
  adam_epsilon: float = 1e-8
  # A non-finite step applies the gradient guard_l2_weight * w of the network weights
  # (clipped): the authors' 1e-4, which pulls the weights back towards a finite region.
  guard_l2_weight: float = 1e-4
  max_bad_steps: int = 50
  jit_compile: bool = False
  # Each replica's tasks run as this many independent chains of ops, which TF's inter-op
  # pool runs side by side (runtime/threads.py): one chain per core on CPU. The loss is the
  # same; each group draws its own noise (docs/performance.md).
  task_groups: int = 2
  # tf.config.experimental.enable_op_determinism(), process-wide: needed for bit-identical
  # runs on GPU; on CPU our ops are deterministic already (docs/reliability.md has the cost).
  deterministic_ops: bool = False
  # A leo-train run whose LEO weights (its best checkpoint, else its latest) start this
  # run when it has no checkpoint of its own, with a fresh optimizer and step count: e.g.
  # end-to-end LEO after LEO meta-trained on the frozen embeddings.
  warm_start: Optional[str] = None

  def __post_init__(self):
    check_types(self)
    require_at_least(self, 1, "meta_batch_size", "num_queries", "num_steps",
                     "validate_every", "num_val_episodes", "val_batch_size", "log_every",
                     "checkpoint_every", "max_bad_steps", "task_groups")
    require_positive(self, "outer_lr", "adam_epsilon")
    require_at_least(self, 0, "guard_l2_weight")
