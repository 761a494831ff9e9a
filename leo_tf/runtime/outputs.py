"""Where a command will write, checked before it works: one line naming the flag or
parameter, instead of a traceback after training (or after 36 s of t-SNE)."""

import os


class OutputPathError(ValueError):
  """An output path cannot be written: a file where a directory belongs, read-only, ..."""


def a_path(path, what: str) -> str:
  """``path`` (str or path-like) as a str; OutputPathError naming ``what`` otherwise."""
  if not isinstance(path, (str, os.PathLike)):  # e.g. a gin binding to None
    raise OutputPathError(f"{what}: expected a directory path, got {path!r}")
  return os.fspath(path)


def writable_directory(path: str, what: str) -> str:
  """``path`` as a directory this process can write (created if missing)."""
  path = a_path(path, what)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputPathError(f"{what}: {path} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OutputPathError(f"{what}: cannot create {path}: {e.strerror}") from None
  read_only = os.statvfs(path).f_flag & os.ST_RDONLY
  if read_only or not os.access(path, os.W_OK):
    why = "it is on a read-only file system" if read_only else "permission denied"
    raise OutputPathError(f"{what}: cannot write to {path}: {why}")
  return path


def writable_file(path: str, what: str) -> str:
  """``path`` as a file this process can create or replace (its directory is created)."""
  if os.path.isdir(path):
    raise OutputPathError(f"{what}: {path} is a directory, not a file")
  writable_directory(os.path.dirname(os.path.abspath(path)), what)
  return path
