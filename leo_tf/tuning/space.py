"""The search space and the search settings of leo-tune, both declared in gin.

A search space is a list of entries, one per gin binding to tune:

  search_space.params = [
      ('TrainConfig.outer_lr', 'log', 1e-5, 1e-3),       # float, log-uniform
      ('LEOConfig.dropout_rate', 'linear', 0.0, 0.5),    # float, uniform
      ('LEOConfig.inner_steps_train', 'int', 1, 5),      # integer, uniform
      ('LEOConfig.num_shots', 'choice', [1, 5]),         # one of the listed values
  ]

Bounds are inclusive. A trial applies its values as ordinary gin bindings on top of
the base config, so any bound parameter of any configurable can be tuned.
"""

import dataclasses
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin

from leo_tf.config_checks import ConfigError, check_types, require_at_least, require_one_of

RANGE_SCALES = ("linear", "log", "int")
SCALES = RANGE_SCALES + ("choice",)
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"


class TuningError(ConfigError):
  """The search cannot run or produced nothing usable; the message says why."""


class SearchSpaceError(ConfigError):
  """A search-space entry is malformed; the message names the entry and the fix."""


@dataclasses.dataclass(frozen=True)
class Param:
  """One tuned binding: a range (``low``..``high``) or a list of ``choices``."""
  binding: str
  scale: str
  low: Optional[float] = None
  high: Optional[float] = None
  choices: Tuple[Any, ...] = ()

  def declare(self, hp):
    """Registers the parameter with a keras-tuner ``HyperParameters``; returns its value."""
    if self.scale == "choice":
      return self.value(hp.Choice(self.binding, list(self.choices), ordered=False))
    if self.scale == "int":
      return self.value(hp.Int(self.binding, self.low, self.high))
    return self.value(hp.Float(self.binding, self.low, self.high, sampling=self.scale))

  def value(self, raw):
    """A plain Python value of the declared type (oracles may hand back numpy scalars)."""
    if self.scale == "choice":
      return raw.item() if hasattr(raw, "item") and not isinstance(raw, str) else raw
    return int(raw) if self.scale == "int" else float(raw)

  def describe(self) -> str:
    if self.scale == "choice":
      return f"{self.binding} in {list(self.choices)}"
    return f"{self.binding} {self.scale} [{self.low:g}, {self.high:g}]"

  def as_list(self) -> list:
    if self.scale == "choice":
      return [self.binding, self.scale, list(self.choices)]
    return [self.binding, self.scale, self.low, self.high]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  params: Tuple[Param, ...]

  def declare(self, hp) -> Dict[str, Any]:
    """Declares every parameter on ``hp``; returns {binding: value} for this trial."""
    return {p.binding: p.declare(hp) for p in self.params}

  def values(self, hp_values: Dict[str, Any]) -> Dict[str, Any]:
    """{binding: plain value} from a trial's recorded values (in declaration order)."""
    return {p.binding: p.value(hp_values[p.binding]) for p in self.params
            if p.binding in hp_values}

  def bindings(self, values: Dict[str, Any]) -> List[str]:
    return [f"{name} = {v!r}" for name, v in values.items()]

  def as_list(self) -> list:
    return [p.as_list() for p in self.params]


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_binding(binding, where: str) -> None:
  if not isinstance(binding, str) or "." not in binding:
    raise SearchSpaceError(f"{where}: the first item must be a binding such as "
                           f"'LEOConfig.dropout_rate', got {binding!r}")
  try:
    gin.config.ParsedBindingKey.parse(binding)
  except ValueError as e:
    raise SearchSpaceError(f"{where}: unknown binding {binding!r}: {e}") from None


def _range_param(binding: str, scale: str, rest: Sequence, where: str) -> Param:
  if len(rest) != 2:
    raise SearchSpaceError(f"{where}: a {scale!r} entry is (binding, {scale!r}, low, high), "
                           f"got {len(rest)} values after the scale")
  low, high = rest
  if not (_is_number(low) and _is_number(high)):
    raise SearchSpaceError(f"{where}: low and high must be numbers, got {low!r}, {high!r}")
  if not (math.isfinite(low) and math.isfinite(high)):
    raise SearchSpaceError(f"{where}: low and high must be finite, got {low!r}, {high!r}")
  if scale == "int" and not (isinstance(low, int) and isinstance(high, int)):
    raise SearchSpaceError(f"{where}: an 'int' range needs integer bounds, "
                           f"got {low!r}, {high!r}")
  if low >= high:
    raise SearchSpaceError(f"{where}: low ({low!r}) must be below high ({high!r}); bind a "
                           "fixed value in the gin file instead of tuning it")
  if scale == "log" and low <= 0:
    raise SearchSpaceError(f"{where}: a 'log' range needs positive bounds, got "
                           f"low={low!r}; use 'linear' or a small positive low")
  if scale != "int":
    low, high = float(low), float(high)
  return Param(binding, scale, low, high)


def _choice_param(binding: str, rest: Sequence, where: str) -> Param:
  if len(rest) != 1 or not isinstance(rest[0], (list, tuple)):
    raise SearchSpaceError(f"{where}: a 'choice' entry is (binding, 'choice', [values...])")
  choices = tuple(rest[0])
  if not choices:
    raise SearchSpaceError(f"{where}: the list of choices is empty")
  kinds = {type(c) for c in choices}
  if len(kinds) != 1 or not kinds <= {int, float, str, bool}:
    raise SearchSpaceError(f"{where}: choices must all be ints, all floats, all strings or "
                           f"all booleans (keras-tuner's rule), got {list(choices)!r}")
  if len(set(choices)) != len(choices):
    raise SearchSpaceError(f"{where}: the choices repeat a value: {list(choices)!r}")
  return Param(binding, "choice", choices=choices)


def parse_entry(entry, index: int) -> Param:
  """One gin tuple -> a validated ``Param``; every problem is a ``SearchSpaceError``."""
  where = f"search_space.params[{index}] {entry!r}"
  if not isinstance(entry, (list, tuple)) or len(entry) < 3:
    raise SearchSpaceError(f"{where}: an entry is (binding, scale, low, high) or "
                           "(binding, 'choice', [values...])")
  binding, scale, rest = entry[0], entry[1], entry[2:]
  _check_binding(binding, where)
  if scale not in SCALES:
    raise SearchSpaceError(f"{where}: unknown scale {scale!r}; use one of {list(SCALES)}")
  if scale == "choice":
    return _choice_param(binding, rest, where)
  return _range_param(binding, scale, rest, where)


@gin.configurable
def search_space(params: Sequence = ()) -> SearchSpace:
  """The gin-declared search space (see the module docstring for the format)."""
  if not params:
    raise SearchSpaceError(
        "the search space is empty: bind search_space.params (see "
        "gin/tuning/default_space.gin)")
  parsed = tuple(parse_entry(e, i) for i, e in enumerate(params))
  names = [p.binding for p in parsed]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise SearchSpaceError(f"search_space.params lists {repeated} more than once")
  return SearchSpace(parsed)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TuneConfig:
  """How the search runs; leo-tune's flags override tuner, max_trials and output_dir.

  Attributes:
    tuner: 'random', 'bayesian' (Gaussian process) or 'hyperband'.
    max_trials: trials in total, counting those of an interrupted run being resumed
      (hyperband: an upper bound on its own schedule).
    steps_per_trial: meta-training steps of one trial (hyperband: of its longest trials).
    validate_every: steps between validations; each validation is one keras-tuner
      "epoch", the unit hyperband allocates.
    num_val_episodes: validation episodes per validation (the objective's noise).
    hyperband_factor: hyperband's reduction factor.
    seed: the oracle's seed (which values are tried).
    output_dir: trials, tables and the best .gin files go here.
  """
  tuner: str = "bayesian"
  max_trials: int = 20
  steps_per_trial: int = 2000
  validate_every: int = 500
  num_val_episodes: int = 500
  hyperband_factor: int = 3
  seed: int = 0
  output_dir: str = "runs/tune"

  def __post_init__(self):
    check_types(self)
    require_one_of(self, "tuner", TUNERS)
    require_at_least(self, 1, "max_trials", "steps_per_trial", "validate_every",
                     "num_val_episodes")
    if self.steps_per_trial % self.validate_every:
      raise ConfigError(f"TuneConfig.steps_per_trial ({self.steps_per_trial}) must be a "
                        f"multiple of TuneConfig.validate_every ({self.validate_every})")
    require_at_least(self, 2, "hyperband_factor")

  @property
  def max_epochs(self) -> int:
    return self.steps_per_trial // self.validate_every

  def budget_bindings(self, epochs: Optional[int] = None) -> List[str]:
    """The TrainConfig bindings that give one trial its budget of ``epochs`` validations."""
    epochs = self.max_epochs if epochs is None else epochs
    return [f"TrainConfig.num_steps = {epochs * self.validate_every}",
            f"TrainConfig.validate_every = {self.validate_every}",
            f"TrainConfig.checkpoint_every = {self.validate_every}",
            f"TrainConfig.num_val_episodes = {self.num_val_episodes}"]
