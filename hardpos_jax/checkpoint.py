"""Orbax checkpoints: exported Flax params (`save_params` / `restore_params`).

A Flax export is a directory holding `model_config.json` (the model config)
and `params/` (an orbax StandardCheckpointer tree of float32 params).
"""

import json
import os
from typing import Any

import orbax.checkpoint as ocp

MODEL_CONFIG = "model_config.json"


def is_flax_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MODEL_CONFIG))


def save_params(path: str, config: dict, params: Any) -> None:
  """Writes `config` and `params` to the directory `path` (absolute-ised).

  orbax writes into a temporary name and renames when complete, so a failed
  save leaves no `params/`; the config is written last, so a directory is
  only recognised as a checkpoint once both are there.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; refusing to overwrite it")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, "params"), params)
    ckptr.wait_until_finished()
  tmp = os.path.join(path, MODEL_CONFIG + ".tmp")
  with open(tmp, "w") as f:
    json.dump(config, f, indent=2)
  os.replace(tmp, os.path.join(path, MODEL_CONFIG))


def restore_params(path: str) -> tuple[dict, Any]:
  """Reads a directory written by `save_params` -> (model config, params)."""
  path = os.path.abspath(path)
  with open(os.path.join(path, MODEL_CONFIG)) as f:
    config = json.load(f)
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(path, "params"))
  return config, params
