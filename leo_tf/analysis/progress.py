"""A dependency-free text progress bar for long analysis loops."""

import sys
import time


class ProgressBar:
  """``[label] |#####     | 120/1000 episodes (95/s, ETA 9s)`` redrawn in place on a
  terminal. Off a terminal (a log file, a pipe) redrawing would be one line per update:
  one summary line when done instead, ``[label] 1000 episodes in 11 s (95/s)``.
  """

  def __init__(self, total: int, label: str, unit: str = "tasks", width: int = 30):
    self.total, self.label, self.unit, self.width = max(int(total), 1), label, unit, width
    self.stream = sys.stderr
    self.done, self.start = 0, time.time()
    self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

  def __call__(self, _, count: int) -> None:
    """Advances by ``count``: the bar is an ``each`` of leo.evaluation.run_episodes."""
    before, self.done = self.done, min(self.total, self.done + int(count))
    elapsed = max(time.time() - self.start, 1e-9)
    rate = self.done / elapsed
    if not self._tty:
      if self.done == self.total > before:
        self.stream.write(f"[{self.label}] {self.done} {self.unit} in {elapsed:.0f} s "
                          f"({rate:.0f}/s)\n")
        self.stream.flush()
      return
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    filled = self.width * self.done // self.total
    bar = "#" * filled + " " * (self.width - filled)
    line = (f"\r[{self.label}] |{bar}| {self.done}/{self.total} {self.unit} "
            f"({rate:.0f}/s, ETA {eta:.0f}s)")
    self.stream.write(line + ("\n" if self.done >= self.total else ""))
    self.stream.flush()
