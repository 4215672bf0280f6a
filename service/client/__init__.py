"""A Python client of the training service: train, watch, predict.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as client:
        job = client.wait(client.submit(x, y, epochs=200)).raise_for_status()
        y_hat = client.predict(job, x_new).predictions
        sweep = client.wait_sweep(client.submit_sweep(x, y, grid={"training.seed": [0, 1]}))
        y_best = client.predict(sweep.best, x_new).predictions

It needs httpx and numpy only and imports nothing of the server. The scikit-learn estimators
(RemoteMLPRegressor, RemoteMLPClassifier) load scikit-learn on first use, from
service.client.estimators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.client._async import AsyncClient
from service.client._exceptions import (
    APIError,
    BadRequest,
    Conflict,
    FeatureNotInstalled,
    Forbidden,
    HeadersTooLarge,
    InternalError,
    InvalidInput,
    JobFailed,
    MethodNotAllowed,
    ModelNotReady,
    ModelUnusable,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
    ServiceClientError,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
)
from service.client._results import (
    Dataset,
    DatasetColumn,
    Job,
    LossHistory,
    Model,
    Page,
    Prediction,
    Sweep,
    Trial,
)
from service.client._sync import Client

if TYPE_CHECKING:
    from service.client.estimators import RemoteMLPClassifier, RemoteMLPRegressor

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Dataset",
    "DatasetColumn",
    "FeatureNotInstalled",
    "Forbidden",
    "HeadersTooLarge",
    "InternalError",
    "InvalidInput",
    "Job",
    "JobFailed",
    "LossHistory",
    "MethodNotAllowed",
    "Model",
    "ModelNotReady",
    "ModelUnusable",
    "NotFound",
    "Overloaded",
    "Page",
    "PayloadTooLarge",
    "Prediction",
    "QuotaExceeded",
    "RemoteMLPClassifier",
    "RemoteMLPRegressor",
    "RequestTimeout",
    "ServerError",
    "ServiceClientError",
    "Sweep",
    "TransportError",
    "Trial",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "WaitTimeout",
]

_ESTIMATORS = ("RemoteMLPRegressor", "RemoteMLPClassifier")


def __getattr__(name: str) -> Any:
    # scikit-learn is heavy and optional: load it when an estimator is first asked for.
    if name in _ESTIMATORS:
        from service.client import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
