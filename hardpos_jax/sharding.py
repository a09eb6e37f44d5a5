"""The device mesh, one "data" axis over every device of every host, and how
arrays are laid out on it: batches split over the axis, the rest replicated.

Legend: B global batch rows.
"""

from collections.abc import Sequence
import os
import socket
from typing import Any

import jax
from jax.experimental import multihost_utils
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


def batch_sharding(mesh: jax.sharding.Mesh,
                   global_batch_size: int) -> jax.sharding.NamedSharding:
  """Rows split over the mesh's batch axis (checked to divide B)."""
  if BATCH_AXIS not in mesh.axis_names:
    raise ValueError(f"The mesh needs a {BATCH_AXIS!r} axis; it has "
                     f"{mesh.axis_names}")
  if global_batch_size % mesh.shape[BATCH_AXIS]:
    raise ValueError(f"Global batch size {global_batch_size} is not divisible "
                     f"by the {mesh.shape[BATCH_AXIS]} devices of the "
                     f"{BATCH_AXIS!r} axis")
  return jax.sharding.NamedSharding(mesh,
                                    jax.sharding.PartitionSpec(BATCH_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """The whole array on every device."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def host_rows(sharding: jax.sharding.Sharding,
              global_batch_size: int) -> tuple[int, int]:
  """Rows [start, stop) of each global batch held by this process's devices."""
  slices = sharding.addressable_devices_indices_map((global_batch_size,))
  spans = sorted({s[0].indices(global_batch_size)[:2] for s in slices.values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError(f"This process's rows {spans} of the batch are not "
                       "contiguous; order the mesh's devices by process")
  return spans[0][0], spans[-1][1]


def put(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host value that every process holds whole -> a global array.

  `jax.device_put` refuses shardings over other processes' devices; building
  the array from a callback places only this process's shards, on one host
  and on a pod slice alike.
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host values (identical on every process) -> replicated global arrays.

  PRNG keys must be raw uint32 arrays (`jax.random.PRNGKey`).
  """
  return jax.tree_util.tree_map(lambda x: put(x, replicated(mesh)), tree)


def split_rows(x: jax.Array, parts: int) -> jax.Array:
  """[B, ...] -> [parts, B / parts, ...]; part j holds rows j, j + parts,
  j + 2 parts, ..., so a batch-sharded x gives parts spread over every
  device as x is (no data moves). `merge_rows` undoes it."""
  return x.reshape(x.shape[0] // parts, parts, *x.shape[1:]).swapaxes(0, 1)


def merge_rows(x: jax.Array) -> jax.Array:
  """[parts, B / parts, ...] from `split_rows` -> [B, ...] in row order."""
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


def process_max(value: int) -> int:
  """The largest of every process's `value` (each process calls it, in the
  same order); no communication with one process."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           heartbeat_timeout_seconds: int = 100) -> None:
  """Joins the multi-process runtime; alone, a 1-process one on localhost.

  orbax's preemption (SIGTERM) saves need the distributed runtime even on a
  single host. Given `num_processes`, all three arguments are passed to
  `jax.distributed.initialize` (a hand-launched run, e.g. several processes
  on one machine); otherwise the cluster (TPU pod, SLURM, ...) is detected.
  Only "no cluster and no JAX_COORDINATOR_ADDRESS" falls back to one
  process: a host whose cluster set-up failed must stop, not train alone
  into the shared workdir. A process whose peer stops sending heartbeats for
  `heartbeat_timeout_seconds` is terminated by the runtime (no hang).
  """
  if num_processes is not None:
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    return
  try:
    jax.distributed.initialize(
        heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  except ValueError:
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
      raise
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    jax.distributed.initialize(f"localhost:{port}", num_processes=1,
                               process_id=0)
