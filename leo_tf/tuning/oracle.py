"""Distributed search, keras-tuner's own mode: which role this process plays.

One process is the oracle chief, which decides every trial's values and serves them over
gRPC; workers run the trials. The role comes from keras-tuner's environment variables
(KERASTUNER_TUNER_ID: 'chief' or a worker's name; KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT: the chief's address), which leo-tune's --tuner_id and --oracle
set. All processes share ``output_dir`` (a shared filesystem): the chief writes
search.json, the oracle's state and, at the end, the tables and best .gin files; each
worker writes the directories of the trials it runs.
"""

import os
import socket
import time
from typing import Callable, Optional

from leo_tf.tuning.space import TuningError

ORACLE_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def use_oracle(address: Optional[str], tuner_id: Optional[str]) -> None:
  """Sets keras-tuner's distributed-mode variables from leo-tune's --oracle (host:port)
  and --tuner_id; either may be omitted when the environment sets it."""
  if address is not None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      raise TuningError(f"--oracle must be host:port (the chief's address), got {address!r}")
    os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
  if tuner_id is not None:
    os.environ["KERASTUNER_TUNER_ID"] = tuner_id


def oracle_role() -> str:
  """'' (one process), 'chief' (serves the oracle) or 'worker' (runs trials), as
  keras-tuner reads its environment; one error line when it is half set."""
  present = [v for v in ORACLE_VARIABLES if os.environ.get(v)]
  if not present or present == ["KERASTUNER_TUNER_ID"]:
    return ""
  if len(present) < len(ORACLE_VARIABLES):
    missing = [v for v in ORACLE_VARIABLES if v not in present]
    raise TuningError(f"a distributed search needs {', '.join(missing)} too (set them, or "
                      "pass --oracle=host:port and --tuner_id=chief|<worker name>)")
  host, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
  if not port.isdigit() or not 1 <= int(port) <= 65535:
    raise TuningError(f"the oracle's port must be 1..65535, got {port!r} (--oracle=host:port "
                      "or KERASTUNER_ORACLE_PORT)")
  if "chief" not in os.environ["KERASTUNER_TUNER_ID"]:
    return "worker"
  _check_free(host, int(port))
  return "chief"


def _check_free(host: str, port: int) -> None:
  """The chief's address can be served: a port in use (or a host that is not this
  machine) is one line now, not a gRPC traceback once the search has started."""
  try:
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
      probe.bind(address)
  except OSError as error:
    raise TuningError(f"the oracle chief cannot serve at {host}:{port}: "
                      f"{error.strerror or error} (choose a free port of this machine)") from None


def wait_for_chief(path: str, log: Callable[[str], None], timeout: float = 3600) -> None:
  """A worker writes nothing until the chief has claimed the search (written ``path``,
  its search.json): workers may start first. keras-tuner's own calls wait an hour for
  the chief, too."""
  out, start = os.path.dirname(path), time.time()
  if not os.path.exists(path):
    log(f"[tune] waiting for the chief to start the search in {out}")
  while not os.path.exists(path):
    if time.time() - start > timeout:
      raise TuningError(f"no chief started a search in {out} within {timeout:.0f} s")
    time.sleep(1)
