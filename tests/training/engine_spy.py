"""Watch what the training loop hands each engine, and what each pass reports back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from service.training import trainer as trainer_module
from service.training.engine import Engine, EpochLoss, StopCheck


@dataclass(frozen=True)
class SpiedEpoch:
    engine: str  # "numpy" or "torch"
    rows: torch.Tensor  # the epoch's inputs and targets side by side, in the order given
    loss: EpochLoss


def spy_on_engines(monkeypatch: pytest.MonkeyPatch) -> list[SpiedEpoch]:
    """Every engine the loop builds from now on (in this test) reports each pass here."""
    seen: list[SpiedEpoch] = []
    real_make_engine = trainer_module.make_engine

    class Spied:
        def __init__(self, inner: Engine) -> None:
            self.inner = inner
            self.name = inner.name

        def train_epoch(
            self, x: torch.Tensor, y: torch.Tensor, batch_size: int, stop: StopCheck | None
        ) -> EpochLoss:
            rows = torch.cat([x, y], dim=1).clone()
            loss = self.inner.train_epoch(x, y, batch_size, stop)
            seen.append(SpiedEpoch(self.name, rows, loss))
            return loss

        def __getattr__(self, attribute: str) -> Any:
            return getattr(self.inner, attribute)

    monkeypatch.setattr(
        trainer_module, "make_engine", lambda *a, **k: Spied(real_make_engine(*a, **k))
    )
    return seen
