"""The device mesh: one "data" axis over every device of every host."""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

BATCH_AXIS = "data"


def create_mesh(devices: Sequence[jax.Device] | None = None
                ) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default: all, all hosts).

  Auto axis types: the towers are partitioned by GSPMD from the batch
  sharding, and the loss runs under `jax.shard_map` on the same axis.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (BATCH_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host values (identical on every process) -> replicated global arrays.

  `jax.device_put` refuses shardings over other processes' devices; building
  each array from a callback works on one host and on a pod slice alike.
  PRNG keys must be raw uint32 arrays (`jax.random.PRNGKey`).
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated, lambda i: x[i])

  return jax.tree_util.tree_map(put, tree)
