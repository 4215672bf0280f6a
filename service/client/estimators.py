"""scikit-learn estimators that train on the service and predict with the model it stores.

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from service.client.estimators import RemoteMLPRegressor

    model = make_pipeline(StandardScaler(), RemoteMLPRegressor(epochs=200))
    model.fit(X_train, y_train).score(X_test, y_test)

They follow scikit-learn's estimator contract (constructor arguments kept as given, fitted
attributes ending in "_", input validation from sklearn.utils.validation), so clone,
Pipeline, cross_val_score and GridSearchCV work with them. A fitted estimator holds only the
id of its model on the service: it pickles small, and predicts wherever the service is
reachable. Models stay on the service after the estimator is gone (Client.delete removes
one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import (  # type: ignore[import-untyped]
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
)
from sklearn.utils.multiclass import check_classification_targets  # type: ignore[import-untyped]
from sklearn.utils.validation import (  # type: ignore[import-untyped]
    check_is_fitted,
    validate_data,
)

from service.client._results import LossHistory
from service.client._sync import Client

DEFAULT_URL = "http://127.0.0.1:8000"

_SHARED_PARAMETERS = """
    base_url : str, default="http://127.0.0.1:8000"
        The service's address.
    api_key : str or None, default=None
        Sent as `Authorization: Bearer <api_key>` when the service requires keys.
    hidden_layers : sequence of int, or int, default=(80,)
        The width of each hidden layer (an int: one hidden layer).
    activation : str, default="tanh"
        The hidden layers' activation: tanh, relu, gelu, sigmoid, silu, leaky_relu, elu,
        softplus or identity.
    optimizer : str, default="adam"
        adam, adamw or sgd.
    learning_rate : float, default=0.01
    momentum : float, default=0.9
        Used by sgd only.
    weight_decay : float, default=0.0
    batch_size : int, default=200
        Clipped to the number of training rows.
    epochs : int, default=400
    validation_fraction : float, default=0.0
        The share of rows held out (seeded) to compute a validation loss every epoch.
    early_stopping_patience : int or None, default=None
        With a validation split: stop after this many epochs without a better validation
        loss, keeping the weights of the best epoch.
    seed : int, default=0
        The same data, settings and seed give the same model.
    input_scaling : {"standard", "none"}, default="standard"
        The service standardises inputs with a scaler fit on the training rows and stored
        with the model, so predict takes raw inputs.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the service trains the job ("auto": wherever it is fastest).
    name : str or None, default=None
        The job's name on the service.
    timeout : float or None, default=None
        Seconds fit waits for training; None waits as long as it takes.
"""

_SHARED_ATTRIBUTES = """
    model_id_ : str
        The id of the trained model on the service (also its job's id).
    loss_curve_ : list of float
        The training loss of every epoch (the mean batch loss).
    validation_scores_ : list of float
        The validation loss of every epoch; only with a validation_fraction above 0.
    n_iter_ : int
        The epochs trained (fewer than `epochs` after early stopping).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names (a DataFrame); the model keeps them too.
"""


class _RemoteMLP(BaseEstimator):  # type: ignore[misc]
    """What both estimators share: the client, the job's settings, training and waiting."""

    # Set by each subclass's __init__ (scikit-learn reads parameters from its signature).
    base_url: str
    api_key: str | None
    hidden_layers: Sequence[int] | int
    activation: str
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    validation_fraction: float
    early_stopping_patience: int | None
    seed: int
    input_scaling: str
    device: str
    name: str | None
    timeout: float | None

    def _client(self) -> Client:
        return Client(self.base_url, api_key=self.api_key)

    def _train(self, x: np.ndarray, y: np.ndarray, task: str, **settings: Any) -> None:
        """Submit the job, wait for it, and set the fitted attributes from its results."""
        names = getattr(self, "feature_names_in_", None)
        with self._client() as client:
            job = client.submit(
                x,
                y,
                task=task,
                name=self.name,
                feature_names=list(names) if names is not None else None,
                hidden_layers=_widths(self.hidden_layers),
                activation=self.activation,
                optimizer=self.optimizer,
                learning_rate=self.learning_rate,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                batch_size=self.batch_size,
                epochs=self.epochs,
                validation_fraction=self.validation_fraction,
                early_stopping_patience=self.early_stopping_patience,
                seed=self.seed,
                input_scaling=self.input_scaling,
                device=self.device,
                **settings,
            )
            try:
                job = client.wait(job, timeout=self.timeout)
            except BaseException:
                # A fit that gives up (timeout, Ctrl-C) stops its job: nobody would use it.
                with contextlib.suppress(Exception):
                    client.cancel(job)
                raise
            history = client.loss(job.raise_for_status())
        self._set_results(job.id, history)

    def _set_results(self, model_id: str, history: LossHistory) -> None:
        self.model_id_ = model_id
        self.loss_curve_ = list(history.train_loss)
        self.n_iter_ = len(history)
        if history.val_loss is not None:
            self.validation_scores_ = [float("nan") if v is None else v for v in history.val_loss]
        elif hasattr(self, "validation_scores_"):
            del self.validation_scores_  # from an earlier fit with a validation split

    def _predict_remote(self, X: Any) -> Any:
        check_is_fitted(self, "model_id_")
        x = validate_data(self, X, reset=False)
        with self._client() as client:
            return client.predict(self.model_id_, x)


class RemoteMLPRegressor(RegressorMixin, _RemoteMLP):  # type: ignore[misc]
    __doc__ = f"""A feed-forward network regressor trained and served by the service.

    fit(X, y) sends the data as a training job and waits for it; predict(X) asks the stored
    model. y may have several columns (one output each).

    Parameters
    ----------{_SHARED_PARAMETERS}
    output_activation : str, default="identity"
        The output layer's activation ("identity": none; the seed notebook used "tanh").
    loss : {{"mse", "mae", "huber"}}, default="mse"
    target_scaling : {{"standard", "none"}}, default="standard"
        Standardise the targets for training (predictions come back in y's units).

    Attributes
    ----------{_SHARED_ATTRIBUTES}
    n_outputs_ : int
        The number of targets (columns of y).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        hidden_layers: Sequence[int] | int = (80,),
        activation: str = "tanh",
        output_activation: str = "identity",
        optimizer: str = "adam",
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        batch_size: int = 200,
        epochs: int = 400,
        loss: str = "mse",
        validation_fraction: float = 0.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        input_scaling: str = "standard",
        target_scaling: str = "standard",
        device: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.output_activation = output_activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.loss = loss
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.seed = seed
        self.input_scaling = input_scaling
        self.target_scaling = target_scaling
        self.device = device
        self.name = name
        self.timeout = timeout

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> RemoteMLPRegressor:
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs)."""
        x, targets = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self._train(
            x,
            targets,
            task="regression",
            output_activation=self.output_activation,
            loss=self.loss,
            target_scaling=self.target_scaling,
        )
        self.n_outputs_ = 1 if targets.ndim == 1 else int(targets.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions: shape (n_samples,) for one target, (n_samples, n_outputs) for more."""
        predictions: np.ndarray = self._predict_remote(X).predictions
        return predictions.ravel() if self.n_outputs_ == 1 else predictions


class RemoteMLPClassifier(ClassifierMixin, _RemoteMLP):  # type: ignore[misc]
    __doc__ = f"""A feed-forward network classifier (softmax, cross-entropy) trained and served
    by the service.

    Labels may be of any type numpy can sort: ints and strings train under their own names
    (so the service's model reports them); other labels (floats, booleans) train as their
    index in classes_.

    Parameters
    ----------{_SHARED_PARAMETERS}
    Attributes
    ----------{_SHARED_ATTRIBUTES}
    classes_ : ndarray
        The class labels, sorted; the columns of predict_proba follow this order.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        hidden_layers: Sequence[int] | int = (80,),
        activation: str = "tanh",
        optimizer: str = "adam",
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        batch_size: int = 200,
        epochs: int = 400,
        validation_fraction: float = 0.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        input_scaling: str = "standard",
        device: str = "auto",
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.seed = seed
        self.input_scaling = input_scaling
        self.device = device
        self.name = name
        self.timeout = timeout

    def fit(self, X: Any, y: Any) -> RemoteMLPClassifier:
        """Train on X (n_samples, n_features) and one label per sample."""
        x, labels = validate_data(self, X, y)
        check_classification_targets(labels)
        classes, indices = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"a classifier needs samples of at least 2 classes; the data has 1 class "
                f"({classes[0]!r})"
            )
        self._train(x, _wire_labels(classes, indices), task="classification")
        self.classes_ = classes
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in classes_ order."""
        probabilities: np.ndarray = self._predict_remote(X).probabilities
        return probabilities

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample."""
        check_is_fitted(self, "classes_")
        result: np.ndarray = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return result


def _widths(hidden_layers: Sequence[int] | int) -> list[int]:
    if isinstance(hidden_layers, int | np.integer):
        return [int(hidden_layers)]
    return [int(width) for width in hidden_layers]


def _wire_labels(classes: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The labels to train on. The service sorts its classes as numpy does (ints by value,
    strings by code point), so its probability columns line up with classes_ either way."""
    if classes.dtype.kind in "iuU" or (
        classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes)
    ):
        wire: np.ndarray = classes[indices]
        return wire
    return indices
