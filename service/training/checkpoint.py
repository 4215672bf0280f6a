"""A training run frozen at an epoch boundary: enough to continue it bit for bit elsewhere.

One layout for every engine and device: weights under torch's state-dict names, optimizer
state under torch.optim's slot names, early-stopping bookkeeping and the elapsed time. There is
no random-generator state: each epoch's shuffle is a pure function of (seed, epoch). So a run
checkpointed by the numpy engine on a CPU continues on the torch engine on a GPU, and back.
It flattens to tensors plus JSON metadata, so storage can keep it as safetensors.

    weights.<name>            the network's parameters   (e.g. weights.0.weight)
    optimizer.<name>.<slot>   per-parameter optimizer state (e.g. optimizer.0.weight.exp_avg)
    best.<name>               the best epoch's weights, when early stopping tracks them
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from service.training.engine import OPTIMIZER_SLOTS, EngineState
from service.training.network import NetworkConfig

# Bumped whenever the layout changes; a checkpoint of another version is not trusted.
FORMAT_VERSION = 2

WEIGHTS = "weights."
OPTIMIZER = "optimizer."
BEST = "best."


class UnusableCheckpoint(Exception):
    """A stored checkpoint this code cannot continue from (the job starts over instead)."""


@dataclass
class EarlyStopping:
    """Early stopping's bookkeeping: the best validation loss so far, its epoch and weights,
    and how many epochs have passed without beating it. The loop updates it each epoch; a
    checkpoint carries a copy."""

    best_val: float = math.inf
    best_epoch: int | None = None
    epochs_since_best: int = 0
    best_weights: dict[str, torch.Tensor] | None = None

    def observe(
        self,
        epoch: int,
        val_loss: float,
        patience: int,
        weights: Callable[[], dict[str, torch.Tensor]],
    ) -> bool:
        """Record an epoch's validation loss (and, when it is the best so far, a copy of the
        weights); True once `patience` epochs have passed without beating the best."""
        if val_loss < self.best_val:
            self.best_val, self.best_epoch, self.epochs_since_best = val_loss, epoch, 0
            self.best_weights = weights()
            return False
        self.epochs_since_best += 1
        return self.epochs_since_best >= patience


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # the last completed epoch
    seconds: float  # training time so far, across attempts
    state: EngineState
    engine: str = ""  # which engine and device wrote it: for logs and warnings only
    device: str = ""
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)

    def resume_early_stopping(self) -> EarlyStopping:
        """A copy the resumed loop may update (a checkpoint stays as it was taken)."""
        return replace(self.early_stopping)

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{WEIGHTS}{k}": v for k, v in self.state.weights.items()}
        for name, slots in self.state.optimizer.items():
            for slot, value in slots.items():
                tensors[f"{OPTIMIZER}{name}.{slot}"] = value
        stopping = self.early_stopping
        for k, v in (stopping.best_weights or {}).items():
            tensors[f"{BEST}{k}"] = v
        metadata = {
            "format_version": FORMAT_VERSION,
            "engine": self.engine,
            "device": self.device,
            "epoch": self.epoch,
            "seconds": self.seconds,
            "best_val": None if math.isinf(stopping.best_val) else stopping.best_val,
            "best_epoch": stopping.best_epoch,
            "epochs_since_best": stopping.epochs_since_best,
        }
        return tensors, metadata

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Checkpoint:
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise UnusableCheckpoint(
                f"its format version is {version!r}; this worker reads version {FORMAT_VERSION}"
            )

        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        optimizer: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in prefixed(OPTIMIZER).items():
            name, _, slot = key.rpartition(".")
            optimizer.setdefault(name, {})[slot] = value
        try:
            best_val = metadata.get("best_val")
            return cls(
                epoch=int(metadata["epoch"]),
                seconds=float(metadata["seconds"]),
                state=EngineState(weights=prefixed(WEIGHTS), optimizer=optimizer),
                engine=str(metadata.get("engine", "")),
                device=str(metadata.get("device", "")),
                early_stopping=EarlyStopping(
                    best_val=math.inf if best_val is None else float(best_val),
                    best_epoch=metadata.get("best_epoch"),
                    epochs_since_best=int(metadata.get("epochs_since_best", 0)),
                    best_weights=prefixed(BEST) or None,
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnusableCheckpoint(f"its metadata is incomplete: {exc!r}") from exc

    def check_fits(self, network: NetworkConfig, optimizer: str) -> None:
        """Raise UnusableCheckpoint unless this checkpoint continues `network` under `optimizer`."""
        expected = parameter_shapes(network)
        _check_same_shapes("weights", self.state.weights, expected)
        if self.early_stopping.best_weights is not None:
            _check_same_shapes("best weights", self.early_stopping.best_weights, expected)
        known_slots = set(OPTIMIZER_SLOTS.get(optimizer, ()))
        for name, slots in self.state.optimizer.items():
            if name not in expected:
                raise UnusableCheckpoint(f"it holds optimizer state for unknown parameter {name}")
            if not set(slots) <= known_slots:
                raise UnusableCheckpoint(
                    f"its optimizer state {sorted(slots)} is not {optimizer}'s "
                    f"{sorted(known_slots)}"
                )
            for slot, value in slots.items():
                want = torch.Size(()) if slot == "step" else expected[name]
                if value.shape != want:
                    raise UnusableCheckpoint(
                        f"optimizer slot {name}.{slot} has shape {tuple(value.shape)}, "
                        f"the network needs {tuple(want)}"
                    )


def parameter_shapes(network: NetworkConfig) -> dict[str, torch.Size]:
    """The state-dict names and shapes of the network's parameters (network.build_network's)."""
    widths = [network.n_inputs, *network.hidden_layers, network.n_outputs]
    shapes: dict[str, torch.Size] = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"{2 * i}.weight"] = torch.Size((fan_out, fan_in))
        shapes[f"{2 * i}.bias"] = torch.Size((fan_out,))
    return shapes


def _check_same_shapes(
    what: str, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size]
) -> None:
    if tensors.keys() != expected.keys():
        raise UnusableCheckpoint(
            f"its {what} are {sorted(tensors)}, the network has {sorted(expected)}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name]:
            raise UnusableCheckpoint(
                f"its {what} {name} have shape {tuple(tensor.shape)}, "
                f"the network needs {tuple(expected[name])}"
            )
