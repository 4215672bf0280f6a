"""Request and response bodies of the native API. Unknown fields are refused everywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    Strict,
    StrictInt,
    model_validator,
)

from service.storage.models import JobStatus
from service.vocabulary import REGRESSION_LOSSES, Activation, Loss, Optimizer

Task = Literal["regression", "classification"]
Scaling = Literal["standard", "none"]
DeviceRequirement = Literal["auto", "cpu", "cuda"]
# Integer labels within int64, so every store and client reads them back exactly.
Label = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] | str

# A value of the data: an int or a finite float, never a bool (true is not 1.0).
Number = Annotated[float, Strict(), AllowInfNan(False)]

# A column's name: short enough for a header row, never empty.
FeatureName = Annotated[str, Field(min_length=1, max_length=200)]

# Pagination offsets beyond this are refused (the database's integers are 64-bit).
MAX_OFFSET = 1_000_000_000


EXAMPLE_JOB: dict[str, Any] = {
    "name": "tiny-demo",
    "data": {
        "x": [[-2.0, -2.0], [-1.0, 0.5], [0.0, 0.0], [0.5, -1.0], [1.0, 1.0], [2.0, 2.0]],
        "y": [[0.1], [0.4], [1.0], [0.4], [0.3], [0.1]],
    },
    "model": {"hidden_layers": [16], "activation": "tanh", "output_activation": "tanh"},
    "training": {"epochs": 50, "batch_size": 6, "learning_rate": 0.01},
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingData(StrictModel):
    x: Annotated[
        list[Annotated[list[Number], Field(min_length=1)]],
        Field(min_length=1, description="Rows of raw input features, all of one length."),
    ]
    y: Annotated[
        list[list[Number]] | list[Label | Number],
        Field(
            min_length=1,
            description="Regression: rows of floats (or one float per row). "
            "Classification: one label per row, int or str.",
        ),
    ]

    feature_names: Annotated[
        list[FeatureName] | None,
        Field(
            description="Names of the columns of x, in order. Optional: the model keeps them, "
            "and scoring protocols that send named columns (MLflow's) match inputs by name.",
        ),
    ] = None

    @model_validator(mode="after")
    def _rectangular(self) -> TrainingData:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        widths = {len(row) for row in self.x}
        if len(widths) > 1:
            raise ValueError(f"rows of x must all have one length, got lengths {sorted(widths)}")
        if self.feature_names is not None:
            if len(self.feature_names) != len(self.x[0]):
                raise ValueError(
                    f"feature_names has {len(self.feature_names)} names but rows of x have "
                    f"{len(self.x[0])} values"
                )
            if len(set(self.feature_names)) != len(self.feature_names):
                raise ValueError("feature_names must not repeat a name")
        if isinstance(self.y[0], list):
            y_widths = {len(row) for row in self.y}
            if len(y_widths) > 1 or 0 in y_widths:
                raise ValueError("rows of y must all have one length of at least 1")
        return self


class NetworkSpec(StrictModel):
    hidden_layers: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=1000)] = [80]
    activation: Activation = "tanh"
    output_activation: Activation | None = Field(
        default="tanh",
        description="Applied to the output layer; null for identity. "
        "Classification always outputs logits (softmax is applied at predict time).",
    )


class TrainingSpec(StrictModel):
    optimizer: Optimizer = "adam"
    learning_rate: Annotated[FiniteFloat, Field(gt=0)] = 0.01
    momentum: Annotated[FiniteFloat, Field(ge=0, lt=1, description="SGD only")] = 0.9
    weight_decay: Annotated[FiniteFloat, Field(ge=0)] = 0.0
    batch_size: Annotated[int, Field(ge=1)] = 200
    epochs: Annotated[int, Field(ge=1)] = 400
    loss: Loss | None = Field(
        default=None, description="Defaults to mse (regression) or cross_entropy (classification)."
    )
    validation_fraction: Annotated[FiniteFloat, Field(ge=0, lt=1)] = 0.0
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    max_runtime_seconds: Annotated[FiniteFloat, Field(gt=0)] | None = Field(
        default=None,
        description="Stop after this much training time and keep the model trained so far "
        "(checked after each epoch). Defaults to the server's ceiling.",
    )


class Preprocessing(StrictModel):
    inputs: Scaling = "standard"
    targets: Scaling = Field(default="none", description="Regression only.")


class Resources(StrictModel):
    device: DeviceRequirement = Field(
        default="auto",
        description="auto: the worker trains it where its cost model says it is fastest "
        "(small networks on the CPU, wide ones on a GPU); cpu or cuda: only a worker with that "
        "device claims it, and it waits in the queue until one is alive.",
    )


class JobCreate(StrictModel):
    """A training job: data, a feed-forward network and training settings."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_JOB]})

    name: Annotated[str, Field(max_length=200)] | None = None
    task: Task = "regression"
    data: TrainingData | None = Field(
        default=None, description="The training data, inline. Send this or dataset_id."
    )
    dataset_id: Annotated[str, Field(min_length=1, max_length=36)] | None = Field(
        default=None,
        description="An uploaded dataset (POST /datasets) to train from, instead of data: its "
        "feature columns are the inputs, its target column the outputs.",
    )
    model: NetworkSpec = Field(default_factory=NetworkSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _consistent_with_task(self) -> JobCreate:
        if (self.data is None) == (self.dataset_id is None):
            raise ValueError(
                "send the training data either inline (data) or as an uploaded dataset "
                "(dataset_id), exactly one of the two"
            )
        if self.task == "classification":
            self._resolve_classification()
        else:
            self._resolve_regression()
        training = self.training
        if training.early_stopping_patience is not None and training.validation_fraction == 0:
            raise ValueError("early_stopping_patience needs a validation_fraction above 0")
        # A dataset's rows are checked when the job is built from its stored summary.
        if self.data is not None:
            problem = validation_split_problem(len(self.data.x), training.validation_fraction)
            if problem:
                raise ValueError(problem)
        return self

    def _resolve_classification(self) -> None:
        if self.data is not None:
            y = self.data.y
            if isinstance(y[0], list) or any(isinstance(v, float) for v in y):
                raise ValueError("classification needs y as one int or str label per row")
            if len({type(v) for v in y}) > 1:
                raise ValueError("labels must be all ints or all strings, not a mix")
            if len(set(y)) < 2:
                raise ValueError("classification needs at least two distinct labels")
        if "output_activation" in self.model.model_fields_set and self.model.output_activation:
            raise ValueError(
                "classification outputs logits with softmax; output_activation must be null"
            )
        self.model.output_activation = None
        if self.training.loss is None:
            self.training.loss = "cross_entropy"
        elif self.training.loss != "cross_entropy":
            raise ValueError("classification supports loss 'cross_entropy' only")
        if self.preprocessing.targets != "none":
            raise ValueError("target scaling applies to regression only")

    def _resolve_regression(self) -> None:
        if self.data is not None:
            y = self.data.y
            if not isinstance(y[0], list) and any(isinstance(v, str) for v in y):
                raise ValueError("regression needs numeric y; use task 'classification' for labels")
        if self.training.loss is None:
            self.training.loss = "mse"
        elif self.training.loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression supports loss {', '.join(REGRESSION_LOSSES)}")


def validation_split_problem(n_rows: int, validation_fraction: float) -> str | None:
    """Why a validation split of `n_rows` cannot be made, or None when it can."""
    if validation_fraction == 0:
        return None
    n_val = round(n_rows * validation_fraction)
    if n_val < 1 or n_rows - n_val < 1:
        return (
            f"validation_fraction {validation_fraction} of {n_rows} rows "
            "leaves no rows for validation or for training"
        )
    return None


class JobSpec(StrictModel):
    """The resolved settings of a job (every default filled in), as stored and returned."""

    task: Task
    model: NetworkSpec
    training: TrainingSpec
    preprocessing: Preprocessing
    resources: Resources = Field(default_factory=Resources)  # absent in jobs stored before it


class JobOut(BaseModel):
    id: str
    name: str | None
    task: Task
    status: JobStatus
    epoch: int
    epochs: int
    train_loss: float | None
    val_loss: float | None
    best_epoch: int | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: str | None
    warnings: list[str]
    n_rows: int
    n_features: int
    dataset_id: str | None = Field(
        description="The uploaded dataset the job trains from; null for inline data, or once "
        "the dataset was deleted after the job ended."
    )
    device: str | None
    sweep_id: str | None = Field(
        default=None, description="The sweep this job is a trial of (null for a job on its own)."
    )
    trial_params: dict[str, Any] | None = Field(
        default=None, description="The values the sweep gave this trial."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: JobSpec


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class TrainingDataSample(BaseModel):
    """Rows of a job's training data, as drawn beside its model's prediction."""

    x: list[list[float]]
    y: list[list[float]] | list[Label]  # regression: rows of targets; classification: labels
    feature_names: list[str] | None
    n_rows: int  # the job's training rows in all; x and y hold an evenly drawn sample of them


class DatasetCreate(TrainingData):
    """A dataset sent as JSON (POST /datasets): the shape of a job's inline data, and a name.
    The target is named by the request's `target` parameter ("y" without one)."""

    name: Annotated[str, Field(max_length=200)] | None = None


class DatasetColumnOut(BaseModel):
    name: str
    role: Literal["feature", "target"]
    kind: Literal["number", "label"] = Field(
        description="number: every value a finite number; label: text (a classification target)."
    )
    min: float | None = Field(description="null for labels")
    max: float | None = Field(description="null for labels")
    mean: float | None = Field(description="null for labels")
    std: float | None = Field(
        description="The population standard deviation (as the input scaler computes it); "
        "null for labels."
    )
    missing: int = Field(description="Empty cells. Uploads with missing cells are refused: 0.")


class DatasetOut(BaseModel):
    id: str
    name: str | None
    n_rows: int
    n_columns: int = Field(description="Feature columns plus the target's.")
    target: str
    feature_names: list[str]
    columns: list[DatasetColumnOut] = Field(
        description="Features first, in order, then the target."
    )
    size_bytes: int = Field(description="The stored data's size, which the storage quota counts.")
    created_at: datetime


class DatasetList(BaseModel):
    datasets: list[DatasetOut]
    total: int
    limit: int
    offset: int


class ModelOut(BaseModel):
    id: str
    name: str | None
    task: Task
    created_at: datetime
    architecture: dict[str, Any]
    n_features: int
    n_outputs: int
    classes: list[Label] | None
    feature_names: list[str] | None
    scalers: dict[str, Any]
    metrics: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelOut]
    total: int
    limit: int
    offset: int


class PredictRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": [[1.5, -2.0], [0.0, 0.0]]}]}
    )

    inputs: Annotated[
        list[Annotated[list[Number], Field(min_length=1)]],
        Field(min_length=1, description="Rows of raw (unscaled) input features."),
    ]

    @model_validator(mode="after")
    def _rectangular(self) -> PredictRequest:
        widths = {len(row) for row in self.inputs}
        if len(widths) > 1:
            raise ValueError(f"rows of inputs must all have one length, got {sorted(widths)}")
        return self


class PredictResponse(BaseModel):
    predictions: list[list[float]] | list[Label]
    probabilities: list[list[float]] | None = None


class LossHistoryOut(BaseModel):
    id: str
    status: str
    epochs: list[int]
    train_loss: list[float]
    val_loss: list[float | None] | None
    seconds: list[float]
    next_from_epoch: int | None = Field(
        default=None, description="More epochs follow: ask again with this from_epoch."
    )


class WorkerJobOut(BaseModel):
    """The job a worker is training: the running job whose lease it holds."""

    id: str
    epoch: int = Field(description="Epochs finished so far.")
    epochs: int
    started_at: datetime | None


class WorkerOut(BaseModel):
    id: str = Field(description="host:pid:suffix, unique to one worker process's life.")
    hostname: str
    pid: int | None = Field(description="The worker's process id on its host.")
    devices: list[str] = Field(description='Where it may train, e.g. ["cpu", "cuda:0"].')
    engine: str
    started_at: datetime
    last_seen_at: datetime = Field(description="Its last heartbeat, by the database's clock.")
    current_job: WorkerJobOut | None = Field(description="None while it waits for a job.")


class WorkerList(BaseModel):
    workers: list[WorkerOut]


class ErrorOut(BaseModel):
    error: str
    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str
