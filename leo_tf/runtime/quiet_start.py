"""Starting TensorFlow without its C++ noise lines.

The ``tensorflow`` wheel writes lines from C++ straight to file descriptor 2, where
``TF_CPP_MIN_LOG_LEVEL`` does not apply to them: on a machine without a GPU its CUDA
probes ("Could not find cuda drivers", "failed call to cuInit", each after absl's "All
log messages before absl::InitializeLog() ..."); on a CPU where it enables oneDNN,
"oneDNN custom operations are on" when it loads and "oneDNN supports DT_BOOL only on
platforms with AVX-512" at some later op. So fd 2 goes, for the life of the process,
through a small filter process that writes back every line except those
(``NoiseFilter``); Python's ``sys.stderr`` writes to the real stderr, unfiltered (so
progress bars still see a terminal). The filter is a process, not a thread: a C++ fatal
error's last line still gets out when the process aborts. A cuInit failure on a machine
that has CUDA drivers is a real error and stays.

``TF_CPP_MIN_LOG_LEVEL=0`` (or 1), or ``verbose=True`` (the console scripts'
``--verbosity=1``), shows everything TensorFlow prints (no filter).
"""

import logging
import os
import re
import signal
import subprocess
import sys

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

_NO_DRIVER = re.compile(r"cudart_stub\.cc.*Could not find cuda drivers")
_CUINIT = re.compile(r"cuda_platform\.cc.*failed call to cuInit")
_ALWAYS_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\)"),
    _NO_DRIVER,
    re.compile(r"port\.cc:\d+\] oneDNN custom operations are on\."),
    re.compile(r"util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms with AVX-512\."),
)

_filter_process = None  # kept so that it is not collected while it runs


class NoiseFilter:
  """Tells TensorFlow's noise lines from the rest, line by line, in the order written."""

  def __init__(self):
    self.no_driver = False  # a cuInit failure is noise only after "no cuda drivers"

  def is_noise(self, line: str) -> bool:
    self.no_driver = self.no_driver or bool(_NO_DRIVER.search(line))
    return (any(pattern.search(line) for pattern in _ALWAYS_NOISE)
            or (self.no_driver and bool(_CUINIT.search(line))))


def noise(lines):
  """The lines of ``lines`` (in order) that are TensorFlow's noise on a CPU machine."""
  noise_filter = NoiseFilter()
  return [line for line in lines if noise_filter.is_noise(line)]


def _forward_without_noise(source=0, sink=1):
  """The filter process: copies ``source`` to ``sink`` line by line, less the noise, until
  every writer has closed ``source``."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the command's last lines still pass
  noise_filter = NoiseFilter()
  with open(source, "rb") as lines:
    for line in lines:
      if sink is None or noise_filter.is_noise(line.decode("utf-8", "replace")):
        continue
      try:
        while line:  # each line as it comes, whole
          line = line[os.write(sink, line):]
      except BrokenPipeError:  # nobody reads stderr any more: keep draining
        sink = None


def _filter_fd2():
  """Sends fd 2 through the filter process and points ``sys.stderr`` (and the logging
  handlers that wrote to it) at the real stderr."""
  global _filter_process
  try:
    real = os.dup(2)
  except OSError:  # no stderr at all: nothing to filter
    return
  sys.stderr.flush()
  read_end, write_end = os.pipe()
  # -I -S: the standard library only, whatever the environment (and 40 ms to start).
  _filter_process = subprocess.Popen([sys.executable, "-I", "-S", __file__],
                                     stdin=read_end, stdout=real, close_fds=True)
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  old = sys.stderr
  sys.stderr = os.fdopen(real, "w", buffering=1, encoding=old.encoding, errors=old.errors)
  for logger in (logging.getLogger(), logging.getLogger("absl")):
    for handler in logger.handlers:
      handler = getattr(handler, "python_handler", handler)  # absl's wraps a StreamHandler
      if getattr(handler, "stream", None) is old:
        handler.setStream(sys.stderr)


def start_tensorflow(verbose: bool = False):
  """Imports TensorFlow and lists its devices (which loads CUDA where there is one), with
  its noise filtered from then on unless ``verbose`` or ``TF_CPP_MIN_LOG_LEVEL`` is 0
  or 1; returns ``tf``.

  Listing devices does not create TensorFlow's runtime: thread pools and logical
  devices can still be configured afterwards.
  """
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  os.environ.setdefault(LOG_LEVEL_ENV, "0" if verbose else "2")  # 2: C++ INFO, WARNING off
  if os.environ[LOG_LEVEL_ENV].strip() not in ("0", "1"):
    _filter_fd2()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.list_physical_devices()
  return tf


if __name__ == "__main__":
  _forward_without_noise()
