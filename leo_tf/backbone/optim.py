"""Optimizer and learning-rate schedule for supervised pre-training."""

import gin
import keras


@gin.configurable
def learning_rate_schedule(total_steps: int, base_lr: float = 0.1,
                           kind: str = "cosine", warmup_steps: int = 0,
                           boundaries=(0.5, 0.75), decay: float = 0.1):
  """'cosine' (to 0, after linear warmup) or 'step' (x ``decay`` at the fractions
  ``boundaries`` of training), or 'constant'."""
  if kind == "constant":
    return base_lr
  if kind == "cosine":
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if warmup_steps:
      return keras.optimizers.schedules.CosineDecay(
          0.0, max(total_steps - warmup_steps, 1), warmup_target=base_lr,
          warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(base_lr, max(total_steps, 1))
  if kind == "step":
    steps = [int(b * total_steps) for b in boundaries]
    values = [base_lr * decay**i for i in range(len(steps) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(steps, values)
  raise ValueError(f"unknown learning-rate schedule {kind!r}: use cosine, step or constant")


@gin.configurable
def build_optimizer(total_steps: int, name: str = "sgd", momentum: float = 0.9,
                    weight_decay: float = 5e-4) -> keras.optimizers.Optimizer:
  """The pre-training optimizer (:func:`make_optimizer`) on the gin-bound schedule."""
  return make_optimizer(name, learning_rate_schedule(total_steps), momentum, weight_decay)


def make_optimizer(name: str, learning_rate, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
  """SGD with Nesterov momentum (or AdamW) and decoupled weight decay.

  Batch-norm scales/offsets and biases are not decayed: shrinking them only fights
  the normalisation.
  """
  if name == "sgd":
    opt = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True,
                               weight_decay=weight_decay or None)
  elif name == "adamw":
    opt = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
  else:
    raise ValueError(f"unknown optimizer {name!r}: use sgd or adamw")
  if weight_decay:
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
  return opt
