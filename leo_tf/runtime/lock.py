"""One process at a time in a run directory.

Two ``leo-train`` processes on one output directory would interleave checkpoints and
overwrite each other's ``best/``. The lock is ``flock`` on the directory itself: it
writes nothing into the run (a failed rerun leaves it exactly as it was) and the kernel
releases it when the holder exits, however it dies (SIGKILL included).
"""

import contextlib
import errno
import fcntl
import os
from typing import Callable, Iterator


class RunDirectoryBusyError(RuntimeError):
  """Another process holds the run directory."""


@contextlib.contextmanager
def hold(directory: str, what: str = "leo-train",
         log: Callable[[str], None] = print) -> Iterator[None]:
  """Holds ``directory`` (created if missing) for the ``with`` block, or raises
  RunDirectoryBusyError at once if another process holds it."""
  fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise RunDirectoryBusyError(
            f"{directory} is in use by another {what} (it holds the directory's lock): "
            "wait for it to finish, or give another output directory") from None
      # Some network filesystems cannot lock a directory: run, but say so.
      log(f"warning: cannot lock {directory} ({e.strerror}); make sure no other "
          f"{what} writes to it")
    yield
  finally:
    os.close(fd)  # releases the lock
