"""Flags and error handling shared by the leo-* entry points (the only place with flags)."""

import errno
import os
import re
import sys
import traceback
from importlib import metadata

from absl import app, flags

from leo_tf.runtime import rundir

FLAGS = flags.FLAGS

flags.DEFINE_bool("version", False,
                  "Print the versions of leo_tf, TensorFlow, TFP and Keras, then exit.")


def versions() -> str:
  """What ``--version`` prints: installed distributions' versions (TF is not started)."""
  def version(distribution):
    try:
      return metadata.version(distribution)
    except metadata.PackageNotFoundError:
      return "not installed"
  import leo_tf  # pylint: disable=import-outside-toplevel
  return (f"leo_tf {leo_tf.__version__}, TensorFlow {version('tensorflow')}, "
          f"TensorFlow Probability {version('tensorflow-probability')}, "
          f"Keras {version('keras')}")


FULL_DISK = "free some space and run again"


def entry_point(body, gin_hint: str = None, required=(), before=None, interrupted=None,
                full_disk: str = FULL_DISK, version_value: str = None):
  """A console script's ``run``: ``app.run`` with ``--version``; then the arguments are
  checked (``required``: flag names, or a dict of names to what the flag is), ``before()``
  runs (what comes before TensorFlow starts: flag checks, logging set-up), and ``body()``
  on the one error path (run_guarded). ``full_disk`` is the advice after a full disk;
  ``version_value`` what ``--version=V`` meant (formatted with V), if anything."""
  required = required if isinstance(required, dict) else dict.fromkeys(required)

  def parse(argv):
    """absl's parse, with a bad flag one `error:` line and exit 2, as any other error."""
    for arg in argv[1:]:
      if arg.startswith("--version="):  # a bool flag: absl would take 1 as True
        value = arg.split("=", 1)[1]
        fail(f"{arg}: --version takes no value (it prints the versions)"
             + (f"; {version_value.format(value)}" if version_value else ""))
    try:
      return FLAGS(argv)
    except flags.Error as error:
      fail(f"{error} (--help lists the flags)")

  def main(argv):
    if FLAGS.version:
      print(versions())
      return 0
    if len(argv) > 1:
      fail(f"unexpected arguments: {argv[1:]}")
    if gin_hint is not None and not FLAGS.gin_file:
      fail(f"give at least one --gin_file ({gin_hint})")
    for name, what in required.items():
      if not getattr(FLAGS, name):
        fail(f"--{name} is required" + (f" ({what})" if what else ""))
    if before is not None:
      before()
    run_guarded(body, interrupted, full_disk)

  def run():
    # absl's --help lists the flags of sys.argv[0], a wrapper: register the script's there.
    for module in (body.__module__, __name__):
      for flag in FLAGS.get_key_flags_for_module(module):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS["verbosity"])
    app.run(main, flags_parser=parse)
  return run


def define_gin_flags():
  if "gin_file" in FLAGS:  # another entry point in this process defined them
    return
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), later ones override.")
  flags.DEFINE_multi_string("gin_bindings", [],
                            "Gin bindings, e.g. --gin_bindings='TrainConfig.num_steps=10'.")


def define_run_flags(use: str, gin_files: bool = False):
  """The flags of a script that opens a leo-train output directory (--which: "to ``use``")."""
  flags.DEFINE_string("checkpoint_dir", None, "A leo-train output directory.")
  flags.DEFINE_enum("which", "best", list(rundir.WHICH), f"Which checkpoint to {use}.")
  if gin_files:
    flags.DEFINE_multi_string("gin_file", [], "Gin files applied on top of the saved config.")
  flags.DEFINE_multi_string("gin_bindings", [], "Overrides on top of the saved config.")


def parse_gin(extra_bindings=(), required=()):
  """Parses --gin_file and --gin_bindings (then ``extra_bindings``): the one parse of
  the process. ``required`` maps a parameter that must be bound to the error if not."""
  import gin  # pylint: disable=import-outside-toplevel
  from leo_tf import gin_config  # pylint: disable=import-outside-toplevel
  gin_config.parse(FLAGS.gin_file, list(FLAGS.gin_bindings) + list(extra_bindings))
  for parameter, message in dict(required).items():
    try:
      gin.query_parameter(parameter)
    except ValueError:
      fail(message)


# What gin appends to any exception raised inside a configurable it called: the place,
# not the cause (and a memory address), so never part of an error line.
_GIN_CONTEXT = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")


def one_line(message: str) -> str:
  return " ".join(_GIN_CONTEXT.sub("", str(message)).split())


def fail(message: str, code: int = 2):
  """Prints a one-line error (no traceback) and exits."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(code)


# Errors that are the user's input, not our bugs: shown without a traceback.
def user_errors():
  # pylint: disable=import-outside-toplevel
  from leo_tf.checkpoints import CheckpointMismatchError, CorruptCheckpointError
  from leo_tf.config_checks import ConfigError
  from leo_tf.data.embeddings import EmbeddingDataError
  from leo_tf.data.glyph_fonts import MissingFontsError
  from leo_tf.data.images import ImageDecodeError, ImageSourceError
  from leo_tf.gin_config import GinConfigError
  from leo_tf.leo.trainer import TrainingDivergedError
  from leo_tf.runtime.lock import RunDirectoryBusyError
  from leo_tf.runtime.outputs import OutputPathError
  from leo_tf.serving.export import ExportError
  return (EmbeddingDataError, GinConfigError, ConfigError, TrainingDivergedError,
          CheckpointMismatchError, CorruptCheckpointError, FileNotFoundError,
          ImageDecodeError, ImageSourceError, ExportError, RunDirectoryBusyError,
          OutputPathError, MissingFontsError)


def bad_binding(error: Exception):
  """One line for a TypeError raised by gin's own call of a configurable (arguments that
  do not fit its signature), else None: the only error blamed on the gin bindings.
  Wrongly typed values are refused by the configs themselves (ConfigError naming the
  field)."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames or f"{os.sep}gin{os.sep}" not in frames[-1].filename:
    return None
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  where = [l.split("'")[1] for l in lines if l.startswith("In call to configurable '")]
  what = " ".join(l for l in lines if not l.startswith("In call to configurable"))
  return (f"{where[0] if where else 'a configurable'}: {type(error).__name__}: {what} "
          "(check its gin bindings)")


# The machine's state, not our bug: a full disk, a read-only or foreign directory.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.EEXIST, errno.ENOTDIR, errno.EISDIR}
_ENVIRONMENT_MESSAGES = ("No space left on device", "Disk quota exceeded",
                         "Read-only file system", "Permission denied")


def environment_error(error: Exception, full_disk: str = FULL_DISK):
  """One line for an OSError (or TF file error) the machine caused, else None;
  ``full_disk``: the advice when the disk is full."""
  if isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS:
    message = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
  elif any(m in str(error) for m in _ENVIRONMENT_MESSAGES):
    # TF's form: "{{function_node __wrapped__SaveV2...}} <path>; No space ... [Op:SaveV2]"
    message = str(error).strip().splitlines()[0]
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", message)
  else:
    return None
  if "space" in message or "quota" in message:
    message += f" ({full_disk})"
  return message


def wrapped_user_error(error: Exception):
  """The message of a user error raised inside a tf.data/py_function op, else None: TF
  re-raises it as InvalidArgumentError etc. with ``ImageDecodeError: ...`` inside."""
  names = "|".join(cls.__name__ for cls in user_errors())
  match = re.search(rf"\b({names}): (.+)", str(error))
  return match.group(2).strip() if match else None


def error_line(error: Exception, full_disk: str = FULL_DISK):
  """The one line an error the user can act on is shown as; None for our bugs."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if isinstance(error, user_errors()):
    return str(error)
  if isinstance(error, TypeError):
    return bad_binding(error)
  if isinstance(error, tf.errors.OpError):
    return wrapped_user_error(error) or environment_error(error, full_disk)
  return environment_error(error, full_disk) if isinstance(error, OSError) else None


def run_guarded(fn, interrupted: str = None, full_disk: str = FULL_DISK):
  """The one error path of every entry point: runs ``fn()``; user errors and bad bindings
  exit with one `error:` line, code 2 (``full_disk``: the advice after a full disk); with
  ``interrupted``, Ctrl-C with that, code 130."""
  # pylint: disable=import-outside-toplevel
  from absl import logging
  from leo_tf.runtime.quiet_start import start_tensorflow
  # --verbosity=1: everything, TF's C++ logs too.
  debug = FLAGS.is_parsed() and FLAGS.verbosity >= logging.DEBUG
  start_tensorflow(verbose=debug)
  if not debug:  # library INFO lines (tfds, checkpoint sharding) drown the progress output
    logging.set_verbosity(logging.WARNING)
  try:
    return fn()
  except KeyboardInterrupt:
    if interrupted is None:
      raise
    fail(interrupted, code=130)
  except Exception as e:  # pylint: disable=broad-except
    message = error_line(e, full_disk)
    if message is None:
      raise
    fail(message)
