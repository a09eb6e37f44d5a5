"""One process of a 2-process (2 fake CPU devices each) train-step run.

Usage: python two_process_worker.py PROCESS_ID PORT STEPS OUT.npz
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(process_id: int, port: int, steps: int, out: str):
  jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                             process_id=process_id)
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top

  # tiny.py and the configs/ it builds on, as the test process sees them.
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:0] = [here, os.path.dirname(here)]
  import tiny  # pylint: disable=g-import-not-at-top
  from hardpos_jax import sharding  # pylint: disable=g-import-not-at-top
  from hardpos_jax import train_step as ts  # pylint: disable=g-import-not-at-top

  # What the input pipeline agrees its text length with.
  assert sharding.process_max(3 + process_id) == 4
  mesh = sharding.create_mesh()
  config = tiny.train_config()
  state = ts.create_train_state(config, tiny.init_params(),
                                jax.random.PRNGKey(1), 10)
  state = sharding.replicate(state, mesh)
  step_fn = ts.make_train_step(config, mesh)
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  for step in range(steps):
    batch = tiny.batch(step)
    half = len(batch["text"]) // 2
    local = {k: v[process_id * half:(process_id + 1) * half]
             for k, v in batch.items()}
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
             for k, v in local.items()}
    state, _ = step_fn(state, batch)
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if process_id == 0:
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    np.savez(out, **{k: np.asarray(v) for k, v in flat.items()})
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
