"""Fixtures of the fault suite: the tiny data and an uninterrupted run."""

import os

import pytest

import harness
from hardpos_jax.data import input_pipeline


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """synthetic_shapes/tiny, built once for the suite."""
  path = str(tmp_path_factory.mktemp("faults") / "tfds")
  input_pipeline.data_source("synthetic_shapes/tiny", "train", path)
  return path


@pytest.fixture(scope="session")
def reference(data_dir):
  """Workdir of an uninterrupted single-process run, `TOTAL_STEPS` steps.

  Its plain return from main is case 7's second half: the final save must be
  complete the moment the process has exited.
  """
  workdir = os.path.join(os.path.dirname(data_dir), "reference")
  harness.run_to_end(workdir, data_dir)
  return workdir
