"""Mixed precision for the backbone: the Keras dtype policy it is built and run under.

'float32' computes in float32; 'mixed_bfloat16' and 'mixed_float16' compute the
convolutions in 16 bits while the weights (and the optimizer's state) stay float32.
float16 has a narrow exponent, so small gradients underflow: its loss is scaled up
before the gradients and they are scaled back down (keras.optimizers.LossScaleOptimizer,
which also skips steps whose gradients overflow). bfloat16 has float32's range and
needs no scaling. GPUs with tensor cores (and TPUs) run 16-bit convolutions several
times faster; a CPU without bf16 units emulates them and is slower.
"""

import contextlib
from typing import Iterator

import keras

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def check(name: str, parameter: str) -> str:
  """``name`` if it is a policy we support, else one clear ValueError naming ``parameter``."""
  if name not in POLICIES:
    raise ValueError(f"{parameter} must be one of {', '.join(POLICIES)}; got {name!r}")
  return name


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
  """Layers built inside compute in ``name``'s dtype (Keras keeps a global policy)."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def scaled_optimizer(optimizer: keras.optimizers.Optimizer,
                     name: str) -> keras.optimizers.Optimizer:
  """The optimizer, wrapped in dynamic loss scaling under 'mixed_float16'."""
  if name == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def with_policy(model: keras.Model, name: str) -> keras.Model:
  """A copy of ``model`` whose layers compute in ``name``'s policy, with its weights
  (float32 in every policy): extraction may run in another precision than training."""
  def rebuild(layer):
    return layer.__class__.from_config(dict(layer.get_config(), dtype=name))
  copy = keras.models.clone_model(model, clone_function=rebuild)
  copy.set_weights(model.get_weights())
  return copy
