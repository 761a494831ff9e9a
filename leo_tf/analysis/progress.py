"""A dependency-free text progress bar for long analysis loops."""

import sys
import time


class ProgressBar:
  """``[label] |#####     | 120/1000 (95/s, ETA 9s)`` redrawn in place on a terminal.

  Off a terminal (logs, CI) it prints a line at every 10% instead of redrawing.
  """

  def __init__(self, total: int, label: str, unit: str = "tasks", width: int = 30):
    self.total, self.label, self.unit, self.width = max(int(total), 1), label, unit, width
    self.stream = sys.stderr
    self.done, self.start = 0, time.time()
    self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._last_decile = -1

  def __call__(self, _, count: int) -> None:
    """The bar as ``each`` of leo.evaluation.run_episodes."""
    self.update(count)

  def update(self, count: int) -> None:
    self.done = min(self.total, self.done + int(count))
    decile = 10 * self.done // self.total
    if not self._tty and decile == self._last_decile:
      return
    self._last_decile = decile
    elapsed = max(time.time() - self.start, 1e-9)
    rate = self.done / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    filled = self.width * self.done // self.total
    bar = "#" * filled + " " * (self.width - filled)
    line = (f"[{self.label}] |{bar}| {self.done}/{self.total} {self.unit} "
            f"({rate:.0f}/s, ETA {eta:.0f}s)")
    self.stream.write(("\r" + line) if self._tty else line + "\n")
    if self._tty and self.done >= self.total:
      self.stream.write("\n")
    self.stream.flush()
