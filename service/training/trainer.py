"""The training loop: pure (no database, no HTTP), reporting each epoch through a callback.

The loop owns what every engine shares: the seeded shuffle of each epoch, the epoch records,
divergence checks, early stopping and cancellation. Engines (engine.py) own the arithmetic.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn as nn

from service.loss_history import EpochResult
from service.training import cuda_graphs as cuda_graphs_module
from service.training import numpy_engine
from service.training.checkpoint import Checkpoint, EarlyStopping
from service.training.cuda_graphs import CudaGraphs
from service.training.data import TrainingTensors, epoch_order
from service.training.engine import Engine, StopCheck, TrainingConfig
from service.training.network import NetworkConfig
from service.training.numpy_engine import NumpyEngine
from service.training.stacked_torch import OneTrialEngine
from service.training.torch_engine import TorchEngine
from service.tuning import PAUSE_WAITS_FOR_EPOCHS_UNDER

StopReason = Literal["completed", "early_stopped", "max_runtime", "cancelled", "paused"]
EngineChoice = Literal["auto", "torch", "numpy"]

log = logging.getLogger("service.worker")


__all__ = ["EpochResult", "TrainingConfig", "TrainingDiverged", "TrainingResult", "train"]


@dataclass
class TrainingResult:
    state: dict[str, torch.Tensor]
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: StopReason = "completed"
    engine: str = "torch"  # the engine that trained it: "numpy" or "torch"
    checkpoint: Checkpoint | None = None  # set when paused after at least one epoch


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: more epochs would not bring it back."""

    def __init__(self, epoch: int, which: str) -> None:
        super().__init__(
            f"training diverged: the {which} loss became NaN or infinite at epoch {epoch}; "
            "try a smaller learning_rate or scaled targets"
        )
        self.epoch = epoch


def engine_for(
    architecture: NetworkConfig, device: torch.device, config: TrainingConfig, choice: EngineChoice
) -> str:
    """The engine that trains `architecture` under `config` on `device`: "numpy" or "torch".

    `numpy` pins the numpy engine wherever it can train the job (the CPU, the activations,
    optimizer and loss it implements); `auto` takes it where it is also the faster one;
    otherwise autograd.
    """
    use_numpy = (choice == "numpy" and numpy_engine.can_train(architecture, device, config)) or (
        choice == "auto" and numpy_engine.supports(architecture, device, config)
    )
    return "numpy" if use_numpy else "torch"


def make_engine(
    network: nn.Module,
    architecture: NetworkConfig,
    config: TrainingConfig,
    device: torch.device,
    choice: EngineChoice = "auto",
    *,
    cuda_graphs: CudaGraphs = "off",
) -> Engine:
    """The engine for the job. On CUDA a small network trains as a stack of one whose steps
    replay as captured graphs (cuda_graphs.py), with `cuda_graphs` "auto"; elsewhere autograd
    with torch.optim, or numpy on the CPU."""
    if engine_for(architecture, device, config, choice) == "numpy":
        return NumpyEngine(architecture, network.state_dict(), config)
    if cuda_graphs_module.use_graphs(architecture, device, cuda_graphs):
        try:
            return OneTrialEngine(architecture, network.state_dict(), config, device)
        except Exception as error:  # never fail the job over a faster path
            log.warning("CUDA graphs unavailable, training eagerly: %r", error)
    return TorchEngine(network, config)


def train(
    network: nn.Module,
    architecture: NetworkConfig,
    data: TrainingTensors,
    config: TrainingConfig,
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
    should_stop: StopCheck | None = None,
    should_pause: StopCheck | None = None,
    checkpoint_due: Callable[[int], bool] | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    resume: Checkpoint | None = None,
    engine: EngineChoice = "auto",
    cuda_graphs: CudaGraphs = "off",
) -> TrainingResult:
    """Train from `network`'s initial weights (or from `resume`); return the final weights.

    `should_stop` is checked between batches (cancel: the run ends where it is);
    `should_pause` too (shutdown: at an epoch boundary the result carries a checkpoint to
    resume from; mid-epoch none, and the run resumes from the last one stored), and so is
    `config.max_runtime_seconds` (the partial epoch is recorded and its weights kept).
    `checkpoint_due(epoch)` asks for a checkpoint after an epoch, delivered to `on_checkpoint`.
    The network must already sit on the device of `data`. Given the same initial weights,
    data, config and seed, a CPU run gives the same loss history bit for bit,
    also when it was checkpointed and resumed on the way; on another engine or device, the same
    history within float32 rounding (the batches are the same). A `resume` checkpoint that does
    not fit the network raises UnusableCheckpoint before any training. `cuda_graphs` "auto"
    lets a small network on CUDA train through captured graphs (make_engine).
    """
    device = data.x_train.device
    trainer = make_engine(network, architecture, config, device, engine, cuda_graphs=cuda_graphs)
    first_epoch, seconds_before, stopping = 1, 0.0, EarlyStopping()
    if resume is not None:
        resume.check_fits(architecture, config.optimizer)
        trainer.load_state(resume.state)
        first_epoch, seconds_before = resume.epoch + 1, resume.seconds
        stopping = resume.resume_early_stopping()
    n_rows = data.x_train.shape[0]
    batch_size = min(config.batch_size, n_rows)
    result = TrainingResult(state={}, engine=trainer.name, best_epoch=stopping.best_epoch)
    started = time.perf_counter() - seconds_before

    def over_runtime() -> bool:
        limit = config.max_runtime_seconds
        return limit is not None and time.perf_counter() - started >= limit

    def interrupted() -> bool:
        """Asked before each batch: long epochs must not outlast a cancel, a shutdown's grace
        or the runtime limit. A shutdown lets a short epoch finish, so that it hands back a
        checkpoint of exactly where it stopped."""
        if should_stop is not None and should_stop():
            return True
        if should_pause is not None and should_pause() and long_epochs():
            return True
        return over_runtime()

    def long_epochs() -> bool:
        """Whether a shutdown would not wait for this run's epochs to end."""
        return not result.history or epoch_seconds() >= PAUSE_WAITS_FOR_EPOCHS_UNDER

    def epoch_seconds() -> float:
        """How long the last epoch took."""
        history = result.history
        return history[-1].seconds - (history[-2].seconds if len(history) > 1 else seconds_before)

    def checkpoint(epoch: int) -> Checkpoint:
        return Checkpoint(
            epoch=epoch,
            seconds=time.perf_counter() - started,
            state=trainer.state(),
            engine=trainer.name,
            device=str(device),
            early_stopping=replace(stopping),
        )

    for epoch in range(first_epoch, config.epochs + 1):
        # The engines look for a cancel between batches; an epoch of one batch has none, so
        # a cancel is also looked for here, or it would wait for the last epoch.
        if should_stop is not None and should_stop():
            result.stop_reason = "cancelled"
            result.state = trainer.weights()
            return result
        if should_pause is not None and should_pause():
            result.stop_reason = "paused"
            result.checkpoint = checkpoint(epoch - 1) if epoch > 1 else None
            result.state = trainer.weights()
            return result
        # One gather per epoch; the engine then slices batches as views.
        order = torch.from_numpy(epoch_order(config.seed, epoch, n_rows)).to(device)
        epoch_loss = trainer.train_epoch(
            data.x_train[order], data.y_train[order], batch_size, interrupted
        )
        train_loss = epoch_loss.mean
        if not epoch_loss.complete:
            # Between batches: a cancel ends the run where it is; a pause hands it back to
            # resume from the last stored checkpoint (the state mid-epoch is not one); the
            # runtime limit keeps what the partial epoch trained, and records it.
            if should_stop is not None and should_stop():
                result.stop_reason = "cancelled"
                result.state = trainer.weights()
                return result
            if should_pause is not None and should_pause():
                result.stop_reason = "paused"
                result.state = trainer.weights()
                return result
        if not math.isfinite(train_loss):
            raise TrainingDiverged(epoch, "training")
        val_loss = None
        if data.x_val is not None and data.y_val is not None:
            val_loss = trainer.evaluate(data.x_val, data.y_val)
            if not math.isfinite(val_loss):
                raise TrainingDiverged(epoch, "validation")
        record = EpochResult(epoch, train_loss, val_loss, time.perf_counter() - started)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)

        if val_loss is not None and config.early_stopping_patience is not None:
            patience_ran_out = stopping.observe(
                epoch, val_loss, config.early_stopping_patience, trainer.weights
            )
            result.best_epoch = stopping.best_epoch
            if patience_ran_out:
                result.stop_reason = "early_stopped"
                break
        if not epoch_loss.complete or over_runtime():
            result.stop_reason = "max_runtime"
            break
        last_epoch = epoch == config.epochs  # the run ends here: nothing left to resume
        # Where a shutdown would not wait for the next epoch to end, every epoch is worth a
        # checkpoint: the job then resumes from the last completed epoch, whatever the interval.
        due = checkpoint_due is not None and (checkpoint_due(epoch) or long_epochs())
        if on_checkpoint and due and not last_epoch:
            on_checkpoint(checkpoint(epoch))

    best = stopping.best_weights
    result.state = best if best is not None else trainer.weights()
    return result
