"""Preemption points that every process agrees on: steps and eval batches.

On SIGTERM the distributed runtime (jax's `reached_preemption_sync_point`)
takes the largest check-in counter any process has reached and names the next
one as the point where all stop; so every process must check in at every
counter, in order. orbax checks in with the training step, which leaves no
counter for the batches of an evaluation run inside a step: without one, a
notice that arrives during a long evaluation waits for its end. One `Clock`
therefore counts both, and the trainer's checkpoint manager asks it instead of
the step (`checkpoint.create_manager(..., clock=)`).
"""

import orbax.checkpoint as ocp


class Preempted(Exception):
  """A preemption notice arrived and the run stopped at the agreed point."""


class Clock:
  """The run's check-in counter: one tick per training step and per batch.

  Every process must make the same ticks in the same order.
  """

  def __init__(self):
    self._count = 0

  def tick(self) -> bool:
    """Checks in at the next point; whether the run must stop there."""
    self._count += 1
    return self.reached()

  def reached(self) -> bool:
    """Whether the current point is the agreed one; asking again is free.

    False without a distributed runtime (no preemption service to agree).
    """
    return ocp.multihost.reached_preemption(self._count)

  def check(self) -> None:
    """`tick`, raising `Preempted` at the agreed point (between batches)."""
    if self.tick():
      raise Preempted(f"preemption point {self._count} reached")
