"""Test set-up: 8 fake CPU devices, TF kept off accelerators, quiet TFDS."""
import os

# Must be set before jax initialises its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys

# Shared tiny configs (tests/tiny.py) import as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
