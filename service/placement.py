"""Where a job trains: the device its worker can finish it soonest on, within what it requires.

A training step costs a fixed overhead (Python and dispatch on the CPU, kernel launches on a
GPU) plus its arithmetic at the device's rate. Small networks are all overhead, and a GPU's
launches cost several times a CPU step of the notebook's network; wide networks are all
arithmetic, where the GPU is tens of times faster. The worker measures both terms for each of
its devices at start-up (service/training/profile.py); this module only compares. Pure: no
torch, no database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Forward and backward of a dense layer: about 6 floating-point operations per weight per row.
FLOPS_PER_PARAMETER_ROW = 6


def device_kind(device: str) -> str:
    """ "cuda:1" -> "cuda": what a job may require and what the claim matches."""
    return device.split(":", 1)[0]


@dataclass(frozen=True)
class JobShape:
    """What a job's training costs depend on."""

    n_parameters: int
    batch_size: int
    n_train_rows: int
    epochs: int

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.n_train_rows / max(1, self.batch_size))

    @property
    def flops_per_step(self) -> float:
        return float(FLOPS_PER_PARAMETER_ROW * self.n_parameters * self.batch_size)


@dataclass(frozen=True)
class DeviceCost:
    """A device as the cost model sees it, measured by its worker."""

    device: str  # "cpu", "cuda:0"
    step_overhead_seconds: float  # a step of a network too small to have arithmetic to speak of
    flops_per_second: float  # the rate of a step's arithmetic once it dominates
    # A GPU runs kernels while the CPU launches the next ones: a step costs the larger of the
    # two. On the CPU one thread does both, one after the other: the sum.
    asynchronous: bool = False
    job_overhead_seconds: float = 0.0  # once per job (moving the data onto the device)

    def step_seconds(self, shape: JobShape) -> float:
        arithmetic = shape.flops_per_step / self.flops_per_second
        if self.asynchronous:
            return max(self.step_overhead_seconds, arithmetic)
        return self.step_overhead_seconds + arithmetic

    def estimate_seconds(self, shape: JobShape) -> float:
        return self.job_overhead_seconds + shape.steps * self.step_seconds(shape)


class NoSuitableDevice(Exception):
    """The job requires a device kind this worker does not have (the claim should prevent it)."""


def place(shape: JobShape, costs: Sequence[DeviceCost], required: str = "auto") -> str:
    """The device that finishes the job soonest among those it allows; ties go to the first
    listed (a worker lists its CPU first: the cheaper device wins a tie)."""
    allowed = [c for c in costs if required == "auto" or device_kind(c.device) == required]
    if not allowed:
        have = ", ".join(c.device for c in costs) or "none"
        raise NoSuitableDevice(f"the job requires {required}; this worker has {have}")
    return min(allowed, key=lambda c: c.estimate_seconds(shape)).device
