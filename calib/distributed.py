"""Several processes on one run: `distributed.enabled=true` joins them with jax.distributed; each one generates and
estimates its share, and process 0 writes the report.

Every process uses only its own devices (a mesh over jax.local_devices()); nothing is computed across hosts. The
artifact store is the meeting point: each process writes its generate shards and estimates there, waits at a
barrier, and process 0 then runs the whole job, which finds every stage already in the store. So artifacts_dir must
be on a filesystem every process sees (on one machine it trivially is). Coordinates come from the config, then from
$CALIB_COORDINATOR / $CALIB_NUM_PROCESSES / $CALIB_PROCESS_ID, else from SLURM (jax.distributed reads srun's
variables itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import jax

from calib.errors import CalibError

T = TypeVar("T")


@dataclass(frozen=True)
class Process:
    """Which process this is, of how many (index 0 of 1 without distributed)."""

    index: int = 0
    count: int = 1
    timeout_s: int = 3600

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every count-th one, starting at its index (round-robin, so shares differ by <= 1)."""
        return [item for i, item in enumerate(items) if i % self.count == self.index]

    def barrier(self, name: str) -> None:
        """Wait until every process reaches the barrier `name` (the coordinator's key-value store; no device work)."""
        if self.count == 1:
            return
        # jax (0.10) has no public handle on the coordination service's barrier. The public
        # multihost_utils.sync_global_devices is a device all-gather over every process's devices: it compiles a
        # program, runs a cross-host collective (gloo on CPU, NCCL on GPU) that calib otherwise never needs, and has
        # no timeout, where this waits at most timeout_s for a process that is still generating its share.
        from jax._src import distributed as jax_distributed

        client = jax_distributed.global_state.client
        if client is None:
            raise CalibError("distributed barrier without jax.distributed: set distributed.enabled=true")
        client.wait_at_barrier(f"calib/{name}", self.timeout_s * 1000)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise CalibError(f"${name}={value!r} is not an integer: set it to a process count or index") from None


def initialize(cfg) -> Process:
    """Join the run's processes (cfg: a DistributedConfig); Process() when cfg.enabled is false."""
    if not cfg.enabled:
        return Process()
    coordinator = cfg.coordinator or os.environ.get("CALIB_COORDINATOR")
    count = cfg.num_processes if cfg.num_processes is not None else _env_int("CALIB_NUM_PROCESSES")
    index = cfg.process_id if cfg.process_id is not None else _env_int("CALIB_PROCESS_ID")
    kwargs = {}
    if coordinator is not None:
        if count is None or index is None:
            raise CalibError(
                "distributed.coordinator is set but the process count or id is not: set distributed.num_processes"
                " and distributed.process_id (or $CALIB_NUM_PROCESSES and $CALIB_PROCESS_ID)"
            )
        if not 0 <= index < count:
            raise CalibError(f"distributed.process_id={index} must lie in [0, num_processes={count})")
        kwargs = dict(coordinator_address=coordinator, num_processes=count, process_id=index)
    elif "SLURM_JOB_ID" not in os.environ:
        raise CalibError(
            "distributed.enabled=true needs a coordinator: set distributed.coordinator=HOST:PORT (and "
            "num_processes, process_id) or run under SLURM (srun), whose variables jax.distributed reads"
        )
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(**kwargs)
    return Process(jax.process_index(), jax.process_count(), cfg.timeout_s)
