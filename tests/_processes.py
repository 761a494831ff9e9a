"""Test processes that talk over loopback: free ports, waiting for all of them."""

import socket
import subprocess

import pytest


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_all(procs, timeout: float):
  """Each process's output, in order; every one must exit 0. Kills the rest when one
  fails or a hung one times out (a cluster must not outlive its test)."""
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0])
      assert proc.returncode == 0, outputs[-1][-3000:]
  except subprocess.TimeoutExpired:
    pytest.fail(f"a process did not finish within {timeout}s")
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return outputs
