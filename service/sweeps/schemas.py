"""Request and response bodies of /sweeps."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, FiniteFloat, model_validator

from service.schemas import LossHistoryOut, StrictModel
from service.storage.models import JobStatus

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# A parameter's dotted path into the job body, e.g. "training.learning_rate".
ParamPath = Annotated[str, Field(min_length=3, max_length=100)]

EXAMPLE_GRID: dict[str, list[Any]] = {
    "training.learning_rate": [0.003, 0.01, 0.03, 0.1],
    "training.seed": [0, 1, 2, 3],
}


class ParamRange(StrictModel):
    """Values drawn between `low` and `high`: uniformly, or log-uniformly (the default for
    learning rates and weight decay, whose good values span decades)."""

    low: FiniteFloat
    high: FiniteFloat
    scale: Literal["linear", "log"] | None = Field(
        default=None,
        description="log: uniform in log(value). Default: log for learning_rate and "
        "weight_decay, linear otherwise.",
    )
    integer: bool = Field(default=False, description="Round each draw to an integer.")

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError("a log scale needs low above 0")
        return self


class RandomSearch(StrictModel):
    n: Annotated[int, Field(ge=1, description="How many trials to draw.")]
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    space: Annotated[
        dict[ParamPath, Annotated[list[Any], Field(min_length=1)] | ParamRange],
        Field(
            min_length=1,
            description="Each parameter's choices (a list, drawn uniformly) or range.",
        ),
    ]


class SweepCreate(StrictModel):
    """A search: a base job (as POST /jobs takes it) and the values its trials vary."""

    name: Annotated[str, Field(max_length=200)] | None = None
    base: dict[str, Any] = Field(description="A job body as POST /jobs takes it.")
    grid: (
        Annotated[
            dict[ParamPath, Annotated[list[Any], Field(min_length=1)]],
            Field(min_length=1, examples=[EXAMPLE_GRID]),
        ]
        | None
    ) = Field(
        default=None,
        description="Every combination of these values is one trial (the first key varies "
        "slowest).",
    )
    random: RandomSearch | None = Field(default=None, description="n trials drawn at random.")

    @model_validator(mode="after")
    def _one_search(self) -> SweepCreate:
        if (self.grid is None) == (self.random is None):
            raise ValueError("send a grid or a random search, exactly one of the two")
        return self


class TrialOut(BaseModel):
    id: str = Field(description="The trial's job id: every /jobs and /models route takes it.")
    params: dict[str, Any]
    status: JobStatus
    epoch: int
    epochs: int
    train_loss: float | None = Field(description="The last epoch's (final once it ended).")
    val_loss: float | None
    error: str | None


class SweepSummary(BaseModel):
    id: str
    name: str | None
    status: SweepStatus = Field(
        description="queued, running, then once every trial ended: succeeded (some trial "
        "did), failed (none did) or cancelled (the sweep was)."
    )
    n_trials: int
    counts: dict[str, int] = Field(description="Trials per status.")
    best: TrialOut | None = Field(
        description="The succeeded trial with the lowest final validation loss (training loss "
        "without a validation split); null until one succeeded."
    )
    best_by: Literal["val_loss", "train_loss"] | None
    search: dict[str, Any]
    created_at: datetime


class SweepOut(SweepSummary):
    trials: list[TrialOut]


class SweepList(BaseModel):
    sweeps: list[SweepSummary]
    total: int
    limit: int
    offset: int


class SweepLossOut(BaseModel):
    """Every trial's loss curve, in the trials' order: one answer to compare them."""

    id: str
    trials: list[LossHistoryOut]
