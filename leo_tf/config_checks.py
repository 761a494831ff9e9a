"""Checks shared by every gin-bound configuration dataclass: each field holds its
annotated type, numbers lie in range, names are among the choices. Each raises
ConfigError with one line naming ``<Config>.<field>``, the CLIs' user-error type."""

import dataclasses
import typing


class ConfigError(ValueError):
  """A configuration value is out of range or inconsistent."""


def require_at_least(config, minimum, *names: str) -> None:
  """ConfigError naming the first field of ``config`` in ``names`` below ``minimum``."""
  for name in names:
    if getattr(config, name) < minimum:
      raise ConfigError(f"{type(config).__name__}.{name} must be >= {minimum}, "
                        f"got {getattr(config, name)}")


def require_positive(config, *names: str) -> None:
  for name in names:
    if getattr(config, name) <= 0:
      raise ConfigError(f"{type(config).__name__}.{name} must be > 0, "
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
