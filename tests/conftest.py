"""Shared fixtures (the helpers themselves are in helpers.py)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from helpers import synthetic_embeddings


@pytest.fixture
def small_set():
  return synthetic_embeddings(12, 20, dim=16, seed=1)
