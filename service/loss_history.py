"""One epoch of a job's loss history: what the training loop reports, the worker buffers and
the queue stores as a row. Pure data, at the bottom, so training and storage share it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based, as users count epochs
    train_loss: float  # mean of the epoch's batch losses, as the notebook records it
    val_loss: float | None
    seconds: float  # training time since the job started, across attempts
