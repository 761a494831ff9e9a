"""Where a command will write, checked before it works: one line naming the flag or
parameter, instead of a traceback after training (or after 36 s of t-SNE)."""

import os


class OutputPathError(ValueError):
  """An output path cannot be written: a file where a directory belongs, read-only, ..."""


def _why_not_writable(directory: str) -> str:
  try:
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
      return "it is on a read-only file system"
  except OSError:
    pass
  return "permission denied"


def writable_directory(path: str, what: str) -> str:
  """``path`` as a directory this process can write (created if missing)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputPathError(f"{what}: {path} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OutputPathError(f"{what}: cannot create {path}: {e.strerror}") from None
  if not os.access(path, os.W_OK) or os.statvfs(path).f_flag & os.ST_RDONLY:
    raise OutputPathError(f"{what}: cannot write to {path}: {_why_not_writable(path)}")
  return path


def writable_file(path: str, what: str) -> str:
  """``path`` as a file this process can create or replace (its directory is created)."""
  if os.path.isdir(path):
    raise OutputPathError(f"{what}: {path} is a directory, not a file")
  writable_directory(os.path.dirname(os.path.abspath(path)), what)
  return path
