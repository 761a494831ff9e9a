"""Starting TensorFlow without its C++ start-up lines.

On a machine without a GPU, the ``tensorflow`` wheel reports its CUDA probes when it
loads and when it first lists devices: "Could not find cuda drivers", "failed call to
cuInit", each after absl's "All log messages before absl::InitializeLog() ...". They
are written from C++ straight to file descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL``
applies, so they are caught there: while TensorFlow loads and lists its devices,
stderr goes to a temporary file, and everything in it except those lines is written
back. A cuInit failure on a machine that has CUDA drivers is a real error and stays.

``TF_CPP_MIN_LOG_LEVEL=0`` (or 1), or ``verbose=True`` (the console scripts'
``--verbosity=1``), shows everything TensorFlow prints.
"""

import contextlib
import os
import re
import sys
import tempfile

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

_NO_DRIVER = re.compile(r"cudart_stub\.cc.*Could not find cuda drivers")
_ABSL_PREAMBLE = re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\)")
_CUINIT = re.compile(r"cuda_platform\.cc.*failed call to cuInit")


def start_up_noise(lines):
  """The lines of ``lines`` that are TensorFlow's start-up noise on a CPU machine."""
  no_driver = any(_NO_DRIVER.search(line) for line in lines)
  return [line for line in lines
          if _ABSL_PREAMBLE.search(line) or _NO_DRIVER.search(line)
          or (no_driver and _CUINIT.search(line))]


@contextlib.contextmanager
def _stderr_without_noise():
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
      noise = start_up_noise(lines)
      sys.stderr.write("".join(line for line in lines if line not in noise))
      sys.stderr.flush()


def start_tensorflow(verbose: bool = False):
  """Imports TensorFlow and lists its devices (which loads CUDA where there is one),
  quietly unless ``verbose`` or ``TF_CPP_MIN_LOG_LEVEL`` is 0 or 1; returns ``tf``.

  Listing devices does not create TensorFlow's runtime: thread pools and logical
  devices can still be configured afterwards.
  """
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  os.environ.setdefault(LOG_LEVEL_ENV, "0" if verbose else "2")  # 2: C++ INFO, WARNING off
  wanted = os.environ[LOG_LEVEL_ENV].strip() in ("0", "1")
  with contextlib.nullcontext() if wanted else _stderr_without_noise():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.list_physical_devices()
  return tf
