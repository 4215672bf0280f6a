"""A sweep's trials: the parameter values of each, and the job request each becomes.

A parameter is a dotted path into the job body ("training.learning_rate", "model.hidden_layers").
A grid yields every combination; a random search draws `n` from a seeded generator, so the same
request always yields the same trials. Each trial is the base job with its values set, checked
as POST /jobs checks a job.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service.errors import InvalidInput
from service.schemas import JobCreate, NetworkSpec, Preprocessing, Resources, TrainingSpec
from service.sweeps.schemas import ParamRange, RandomSearch, SweepCreate

# The sections of a job body a sweep may vary, and the fields each has.
SECTIONS: dict[str, type[BaseModel]] = {
    "model": NetworkSpec,
    "training": TrainingSpec,
    "preprocessing": Preprocessing,
    "resources": Resources,
}
# Ranges over these are drawn log-uniformly unless the request says otherwise.
LOG_SCALED = ("learning_rate", "weight_decay")
# Settings that may differ between trials that train as one stacked model: the stacked
# engines take them per trial. Any other difference (layers, batch size, optimizer, loss,
# validation split, scaling, device) puts trials in different stacks.
PER_TRIAL_TRAINING = (
    "learning_rate",
    "momentum",
    "weight_decay",
    "seed",
    "epochs",
    "early_stopping_patience",
    "max_runtime_seconds",
)

Params = dict[str, Any]


def allowed_paths() -> list[str]:
    return [f"{section}.{name}" for section, spec in SECTIONS.items() for name in spec.model_fields]


def check_paths(paths: list[str]) -> None:
    known = set(allowed_paths())
    unknown = [path for path in paths if path not in known]
    if unknown:
        raise InvalidInput(
            f"a sweep cannot vary {', '.join(unknown)}; it varies the job's settings: "
            + ", ".join(sorted(known))
        )


def trial_params(request: SweepCreate) -> list[Params]:
    """Each trial's values, in order: a grid's combinations (first key slowest), or random draws."""
    if request.grid is not None:
        check_paths(list(request.grid))
        keys = list(request.grid)
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*request.grid.values())
        ]
    assert request.random is not None, "the schema requires a grid or a random search"
    return draw(request.random)


def grid_size(request: SweepCreate) -> int:
    """How many trials the request asks for, counted before any is built."""
    if request.grid is not None:
        return math.prod(len(values) for values in request.grid.values())
    assert request.random is not None, "the schema requires a grid or a random search"
    return request.random.n


def draw(search: RandomSearch) -> list[Params]:
    check_paths(list(search.space))
    rng = np.random.default_rng(search.seed)
    trials = []
    for _ in range(search.n):
        params: Params = {}
        for path, space in search.space.items():
            if isinstance(space, ParamRange):
                params[path] = _draw_from(rng, path, space)
            else:
                params[path] = space[int(rng.integers(len(space)))]
        trials.append(params)
    return trials


def _draw_from(rng: np.random.Generator, path: str, space: ParamRange) -> float | int:
    scale = space.scale or ("log" if path.rsplit(".", 1)[-1] in LOG_SCALED else "linear")
    if scale == "log" and space.low > 0:
        value = math.exp(rng.uniform(math.log(space.low), math.log(space.high)))
    else:
        value = rng.uniform(space.low, space.high)
    if space.integer:
        return round(value)
    return float(f"{value:.4g}")  # four significant digits: readable, and plenty for a search


def trial_requests(
    base: JobCreate, raw_base: dict[str, Any], trials: list[Params]
) -> list[JobCreate]:
    """Each trial's job request: the base with the trial's values set, validated as POST /jobs
    validates a job. The base's data is parsed once and shared by every trial."""
    without_data = {k: v for k, v in raw_base.items() if k != "data"}
    requests = []
    for number, params in enumerate(trials, start=1):
        body = copy.deepcopy(without_data)
        for path, value in params.items():
            section, name = path.split(".", 1)
            part = body.setdefault(section, {})
            if not isinstance(part, dict):
                raise InvalidInput(f"base.{section} must be an object")
            part[name] = value
        if base.data is not None:
            body["data"] = base.data  # a parsed model: validated once, not per trial
        try:
            requests.append(JobCreate.model_validate(body))
        except ValidationError as exc:
            raise InvalidInput(
                f"trial {number} ({describe(params)}) is not a valid job: {_first_error(exc)}"
            ) from None
    return requests


def describe(params: Params) -> str:
    return ", ".join(f"{path}={orjson.dumps(value).decode()}" for path, value in params.items())


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def stack_key(spec: dict[str, Any]) -> str:
    """Trials of one sweep with the same key can train as one stacked model: everything of the
    resolved spec but the per-trial training settings."""
    training = {k: v for k, v in spec["training"].items() if k not in PER_TRIAL_TRAINING}
    shape = {**{k: v for k, v in spec.items() if k != "training"}, "training": training}
    return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()
