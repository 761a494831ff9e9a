"""leo_tf.runtime.threads sets TF's pools before the first op and says so when it is too late."""

import subprocess
import sys

SCRIPT = """
import tensorflow as tf
from leo_tf.runtime import threads
logged = []
if {start_first}:
  tf.constant(1.0) + 1.0                      # TF starts with its default pools
ok = threads.configure(threads.Threads(intra_op=1, inter_op=3), log=logged.append)
print(ok, tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads(), len(logged))
"""


def _run(start_first: bool):
  out = subprocess.run([sys.executable, "-c", SCRIPT.format(start_first=start_first)],
                       capture_output=True, text=True, check=True)
  return out.stdout.split()


def test_configure_before_the_first_op_sets_the_pools():
  assert _run(start_first=False) == ["True", "1", "3", "0"]


def test_configure_after_tf_started_keeps_defaults_and_logs():
  ok, intra, inter, logged = _run(start_first=True)
  assert (ok, intra, inter, logged) == ("False", "0", "0", "1")
