"""The training loop for a stack of trials: trainer.train's loop, per trial, over one engine.

Every trial keeps what a job trained alone has: its own batches (the (seed, epoch) shuffle of its
own split), loss history, early stopping, divergence check, epoch count, runtime limit, cancel
and checkpoints. What they share is the engine's arithmetic (stacked_engine.py) and the clock.
A trial that ends for any reason leaves the stack (`keep`), so the others stop paying for it.
Each trial's history equals that trial trained alone by train() within float32 rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from service.loss_history import EpochResult
from service.training import numpy_engine
from service.training.checkpoint import Checkpoint, EarlyStopping
from service.training.cuda_graphs import CudaGraphs, use_graphs
from service.training.data import TrainingTensors, epoch_order
from service.training.engine import StopCheck, TrainingConfig
from service.training.network import NetworkConfig
from service.training.stacked_engine import StackedEngine
from service.training.stacked_numpy import StackedNumpyEngine
from service.training.stacked_torch import StackedTorchEngine
from service.training.trainer import EngineChoice, TrainingDiverged, TrainingResult
from service.tuning import PAUSE_WAITS_FOR_EPOCHS_UNDER

Outcome = TrainingResult | TrainingDiverged


@dataclass
class Trial:
    """One trial of a stack: its settings, data and initial weights, and its hooks (the same
    as train()'s, per trial)."""

    config: TrainingConfig
    data: TrainingTensors  # trials with the same seed may share one object: it is gathered once
    initial: dict[str, torch.Tensor]
    resume: Checkpoint | None = None
    on_epoch: Callable[[EpochResult], None] | None = None
    should_stop: StopCheck | None = None  # a cancel, or a lost lease: this trial ends where it is
    checkpoint_due: Callable[[int], bool] | None = None
    on_checkpoint: Callable[[Checkpoint], None] | None = None
    # Called as the trial leaves the stack (done, stopped early, diverged, cancelled), while the
    # others train on: its model can be stored at once. Not called for a pause.
    on_end: Callable[[Outcome], None] | None = None


@dataclass
class _Progress:
    """A trial's state in the loop."""

    result: TrainingResult
    stopping: EarlyStopping
    seconds_before: float
    outcome: Outcome | None = None  # set when the trial leaves the stack


def make_stacked_engine(
    network: NetworkConfig,
    initial: Sequence[dict[str, torch.Tensor]],
    configs: Sequence[TrainingConfig],
    device: torch.device,
    choice: EngineChoice = "auto",
    cuda_graphs: CudaGraphs = "off",
) -> StackedEngine:
    """numpy on the CPU wherever it can train the network (as for one trial); torch on a GPU
    (through captured CUDA graphs where use_graphs allows), or for what numpy lacks."""
    if choice != "torch" and numpy_engine.can_train(network, device, configs[0]):
        return StackedNumpyEngine(network, initial, configs)
    # The limit on graph capture is per trial's network: a stack's step launches as many kernels.
    graphs = use_graphs(network, device, cuda_graphs)
    return StackedTorchEngine(network, initial, configs, device, graphs=graphs)


def train_stack(
    network: NetworkConfig,
    trials: Sequence[Trial],
    *,
    should_pause: StopCheck | None = None,
    engine: EngineChoice = "auto",
    cuda_graphs: CudaGraphs = "off",
) -> list[Outcome]:
    """Train every trial; each one's outcome, in order: a TrainingResult as train() returns
    it, or the TrainingDiverged that ended it (the other trials go on).

    Trials resumed from checkpoints must all continue after the same epoch (the worker groups
    them so). `should_pause` (a shutdown) hands every trial back as train() does: at an epoch
    boundary each with a checkpoint, mid-epoch without. A resume checkpoint that does not fit
    the network raises UnusableCheckpoint before any training.
    """
    device = trials[0].data.x_train.device
    resumed = {t.resume.epoch if t.resume else 0 for t in trials}
    if len(resumed) > 1:
        raise ValueError(f"the trials of a stack continue after one epoch; got {sorted(resumed)}")
    first_epoch = resumed.pop() + 1
    initial = []
    for trial in trials:
        if trial.resume is not None:
            trial.resume.check_fits(network, trial.config.optimizer)
            initial.append(trial.resume.state.weights)
        else:
            initial.append(trial.initial)
    stack = make_stacked_engine(
        network, initial, [t.config for t in trials], device, engine, cuda_graphs
    )
    progress: list[_Progress] = []
    for slot, trial in enumerate(trials):
        stopping, seconds = EarlyStopping(), 0.0
        if trial.resume is not None:
            stack.load_state(slot, trial.resume.state)
            stopping, seconds = trial.resume.resume_early_stopping(), trial.resume.seconds
        result = TrainingResult(state={}, engine=stack.name, best_epoch=stopping.best_epoch)
        progress.append(_Progress(result, stopping, seconds))
    loop = _StackLoop(stack, list(trials), progress, should_pause, device)
    loop.run(first_epoch)
    outcomes = [p.outcome for p in progress]
    assert all(o is not None for o in outcomes), "every trial leaves the stack with an outcome"
    return [o for o in outcomes if o is not None]


class _StackLoop:
    """The epochs of one stack. `active` lists the trials still in it, in the engine's order."""

    def __init__(
        self,
        stack: StackedEngine,
        trials: list[Trial],
        progress: list[_Progress],
        should_pause: StopCheck | None,
        device: torch.device,
    ) -> None:
        self.stack, self.trials, self.progress = stack, trials, progress
        self.should_pause = should_pause
        self.device = device
        self.active = list(range(len(trials)))
        self.started = time.perf_counter()
        self.epoch_ends: list[float] = []
        self.batch_size = min(trials[0].config.batch_size, trials[0].data.x_train.shape[0])
        self._group_data()

    # -- what the engine asks between batches --

    def interrupted(self) -> bool:
        """A shutdown (when epochs are long), or every trial in the stack asked to stop."""
        if self.should_pause is not None and self.should_pause() and self.long_epochs():
            return True
        return all(self._stop_requested(i) for i in self.active)

    def long_epochs(self) -> bool:
        if not self.epoch_ends:
            return True
        previous = self.epoch_ends[-2] if len(self.epoch_ends) > 1 else self.started
        return self.epoch_ends[-1] - previous >= PAUSE_WAITS_FOR_EPOCHS_UNDER

    def _stop_requested(self, i: int) -> bool:
        should_stop = self.trials[i].should_stop
        return should_stop is not None and should_stop()

    # -- the epochs --

    def run(self, first_epoch: int) -> None:
        last = max(t.config.epochs for t in self.trials)
        for epoch in range(first_epoch, last + 1):
            self._leave([i for i in self.active if self._stop_requested(i)], "cancelled")
            if not self.active:
                return
            if self.should_pause is not None and self.should_pause():
                self._pause_all(epoch - 1 if epoch > 1 else None)
                return
            if not self._train_epoch(epoch):
                return
        self._leave(list(self.active), "completed")  # only trials that finished on the last epoch

    def _train_epoch(self, epoch: int) -> bool:
        """One epoch of every active trial; False when the stack was interrupted mid-epoch."""
        x, y = self._gathered(epoch)
        losses = self.stack.train_epoch(x, y, self.batch_size, self.interrupted)
        if not losses.complete:
            self._leave([i for i in self.active if self._stop_requested(i)], "cancelled")
            if self.active:  # a shutdown mid-epoch: resume from the last stored checkpoint
                self._pause_all(None)
            return False
        val = self._validation_losses()
        now = time.perf_counter()
        self.epoch_ends.append(now)
        ended: dict[int, str] = {}
        for slot, i in enumerate(self.active):
            trial, state = self.trials[i], self.progress[i]
            train_loss = float(losses.means[slot])
            val_loss = None if val is None else float(val[slot])
            if not math.isfinite(train_loss):
                state.outcome = TrainingDiverged(epoch, "training")
            elif val_loss is not None and not math.isfinite(val_loss):
                state.outcome = TrainingDiverged(epoch, "validation")
            if state.outcome is not None:
                ended[i] = "diverged"
                continue
            record = EpochResult(
                epoch, train_loss, val_loss, state.seconds_before + now - self.started
            )
            state.result.history.append(record)
            if trial.on_epoch is not None:
                trial.on_epoch(record)
            reason = self._ends_after(epoch, i, slot, val_loss, record.seconds)
            if reason is not None:
                ended[i] = reason
        self._checkpoint(epoch, [i for i in self.active if i not in ended])
        for reason in ("early_stopped", "max_runtime", "completed", "diverged"):
            self._leave([i for i, why in ended.items() if why == reason], reason)
        return True

    def _ends_after(
        self, epoch: int, i: int, slot: int, val_loss: float | None, seconds: float
    ) -> str | None:
        """Why trial `i` ends after this epoch (early stopping, its runtime, its last epoch)."""
        config, state = self.trials[i].config, self.progress[i]
        if val_loss is not None and config.early_stopping_patience is not None:
            patience_ran_out = state.stopping.observe(
                epoch, val_loss, config.early_stopping_patience, lambda: self.stack.weights(slot)
            )
            state.result.best_epoch = state.stopping.best_epoch
            if patience_ran_out:
                return "early_stopped"
        limit = config.max_runtime_seconds
        if limit is not None and seconds >= limit:
            return "max_runtime"
        return "completed" if epoch >= config.epochs else None

    def _checkpoint(self, epoch: int, continuing: list[int]) -> None:
        """All continuing trials together, so a resumed stack continues after one epoch."""
        due = self.long_epochs() or any(
            (c := self.trials[i].checkpoint_due) is not None and c(epoch) for i in continuing
        )
        if not due:
            return
        for i in continuing:
            hook = self.trials[i].on_checkpoint
            if hook is not None and self.trials[i].checkpoint_due is not None:
                hook(self._checkpoint_of(i, epoch))

    def _checkpoint_of(self, i: int, epoch: int) -> Checkpoint:
        state = self.progress[i]
        return Checkpoint(
            epoch=epoch,
            seconds=state.seconds_before + time.perf_counter() - self.started,
            state=self.stack.state(self.active.index(i)),
            engine=self.stack.name,
            device=str(self.device),
            early_stopping=replace(state.stopping),
        )

    def _pause_all(self, epoch: int | None) -> None:
        for i in list(self.active):
            result = self.progress[i].result
            result.stop_reason = "paused"
            result.checkpoint = self._checkpoint_of(i, epoch) if epoch is not None else None
        self._leave(list(self.active), "paused")

    def _leave(self, which: list[int], reason: str) -> None:
        """End these trials: keep their weights (the best epoch's, with early stopping), and
        drop them from the engine."""
        if not which:
            return
        for i in which:
            state = self.progress[i]
            if state.outcome is None:
                result = state.result
                if reason != "paused":
                    result.stop_reason = reason  # type: ignore[assignment]
                best = state.stopping.best_weights
                if best is not None and reason != "cancelled":
                    result.state = best
                else:
                    result.state = self.stack.weights(self.active.index(i))
                state.outcome = result
        kept = [slot for slot, i in enumerate(self.active) if i not in which]
        self.active = [self.active[slot] for slot in kept]
        if self.active:
            self.stack.keep(kept)
        for i in which:
            on_end, outcome = self.trials[i].on_end, self.progress[i].outcome
            if on_end is not None and outcome is not None and reason != "paused":
                on_end(outcome)

    # -- data --

    def _group_data(self) -> None:
        """Trials that share their data and seed see the same rows in the same order: their
        data is stacked once per group, and each epoch gathers every group's order at once."""
        groups: dict[tuple[int, int], int] = {}
        for trial in self.trials:
            groups.setdefault((id(trial.data), trial.config.seed), len(groups))
        self.group_of = [groups[(id(t.data), t.config.seed)] for t in self.trials]
        firsts = {g: t for t, g in zip(self.trials, self.group_of, strict=True)}
        ordered = [firsts[g] for g in range(len(groups))]
        self.group_seeds = [t.config.seed for t in ordered]
        self.x_train = torch.stack([t.data.x_train for t in ordered])
        self.y_train = torch.stack([t.data.y_train for t in ordered])
        self.x_val: torch.Tensor | None = None
        self.y_val: torch.Tensor | None = None
        x_vals = [t.data.x_val for t in ordered if t.data.x_val is not None]
        y_vals = [t.data.y_val for t in ordered if t.data.y_val is not None]
        if len(x_vals) == len(y_vals) == len(ordered):  # the split is the stack's, shared
            self.x_val, self.y_val = torch.stack(x_vals), torch.stack(y_vals)
        self._val_of: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def _active_groups(self) -> torch.Tensor:
        return torch.tensor([self.group_of[i] for i in self.active], device=self.device)

    def _gathered(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every active trial's rows in its epoch order, stacked: [trials, rows, ...]. Each
        group's rows are gathered once (contiguous takes), then copied out per trial: one
        fancy index over [trials, rows] cost over ten times as much at 16 trials (measured)."""
        n_rows = self.x_train.shape[1]
        orders = [epoch_order(seed, epoch, n_rows) for seed in self.group_seeds]
        groups = [self.group_of[i] for i in self.active]
        if self.device.type == "cpu":
            x, y = self.x_train.numpy(), self.y_train.numpy()
            x_groups = np.stack([x[g].take(order, axis=0) for g, order in enumerate(orders)])
            y_groups = np.stack([y[g].take(order, axis=0) for g, order in enumerate(orders)])
            picked = np.asarray(groups)
            return (
                torch.from_numpy(x_groups.take(picked, axis=0)),
                torch.from_numpy(y_groups.take(picked, axis=0)),
            )
        rows = [torch.from_numpy(order).to(self.device) for order in orders]
        x_on = torch.stack([self.x_train[g].index_select(0, r) for g, r in enumerate(rows)])
        y_on = torch.stack([self.y_train[g].index_select(0, r) for g, r in enumerate(rows)])
        chosen = torch.tensor(groups, device=self.device)
        return x_on.index_select(0, chosen), y_on.index_select(0, chosen)

    def _validation_losses(self) -> list[float] | None:
        if self.x_val is None or self.y_val is None:
            return None
        active = tuple(self.active)
        if self._val_of is None or self._val_of[0] != active:  # gathered again when trials leave
            groups = self._active_groups()
            self._val_of = (active, self.x_val[groups], self.y_val[groups])
        _, x_val, y_val = self._val_of
        return [float(v) for v in self.stack.evaluate(x_val, y_val)]
