"""Writing files: atomically (a crash leaves the old file or the new one, never half of
one), and the CSV and Markdown tables that reports are made of."""

import contextlib
import csv
import io
import os
import shutil
from typing import Dict, Iterator, List, Optional, Sequence, Union


@contextlib.contextmanager
def atomic_path(path: str, tmp: Optional[str] = None) -> Iterator[str]:
  """Yields a temporary path to write; renames it onto ``path`` if the block succeeds.

  ``tmp`` defaults to ``path + '.tmp'`` (writers that need a suffix, such as Keras's
  ``.keras``, pass their own). Parent directories are created.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = tmp or path + ".tmp"
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write(path: str, data: Union[str, bytes], fsync: bool = False) -> str:
  """Writes ``data`` (text or bytes) to ``path`` atomically; returns ``path``.

  ``fsync`` forces the bytes to disk before the rename (a commit record that must
  survive a power cut, not only a crash of this process).
  """
  with atomic_path(path) as tmp:
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
      if fsync:
        f.flush()
        os.fsync(f.fileno())
  return path


@contextlib.contextmanager
def atomic_directory(directory: str) -> Iterator[str]:
  """Yields a sibling temporary directory; renames it to ``directory`` on success.

  For readers that poll a parent directory (TF Serving's export base), which must never
  see a half-written child. ``directory`` must not exist yet.
  """
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".tmp-{os.path.basename(directory)}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    yield tmp
    os.rename(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def csv_text(rows: Sequence[Dict], columns: Optional[Sequence[str]] = None,
             lineterminator: str = "\r\n") -> str:
  """``rows`` as CSV with a header; ``columns`` picks and orders the fields."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(columns or rows[0]), extrasaction="ignore",
                          lineterminator=lineterminator)
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
  """The lines of a Markdown table: the header, the rule, a line per row of cells."""
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
          ["| " + " | ".join(cells) + " |" for cells in rows])
