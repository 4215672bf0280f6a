"""The scikit-learn estimators against a live service, through scikit-learn's own tooling:
clone, Pipeline, cross_val_score, GridSearchCV and its estimator checks."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

from service.client import Client, WaitTimeout
from service.client.estimators import RemoteMLPClassifier, RemoteMLPRegressor
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

# Small enough that each of the checks' dozens of fits takes well under a second, large
# enough that the checks' accuracy thresholds (check_classifiers_train, ..._regressors_train)
# hold without the poor_score tag.
TINY: dict[str, Any] = {
    "hidden_layers": (16,),
    "epochs": 40,
    "learning_rate": 0.05,
    "batch_size": 32,
}

# The checks that do not apply to a remote estimator, each with the reason; every other check
# scikit-learn generates for these estimators runs against the service.
NOT_APPLICABLE: dict[str, str] = {
    "check_array_api_input": "inputs cross the network as numbers in JSON or .npz, so the "
    "estimators claim no Array API support (array_api_support=False); arrays of other "
    "namespaces are the caller's to convert",
    "check_estimators_partial_fit_n_features": "no partial_fit: a job trains from its first "
    "epoch to its last on the service",
    "check_non_transformer_estimators_n_iter": "it checks estimators with a max_iter parameter; "
    "these have epochs instead (test_fitted_attributes_describe_the_remote_model checks n_iter_)",
    "check_decision_proba_consistency": "no decision_function: the service answers "
    "probabilities, not scores",
}

RNG = np.random.default_rng(0)
X = RNG.uniform(-2, 2, size=(120, 3))
Y = X[:, 0] - 2 * X[:, 1] + 0.5 * X[:, 2]


def generated_checks() -> list[Any]:
    cases: list[Any] = []
    for estimator in (RemoteMLPRegressor(**TINY), RemoteMLPClassifier(**TINY)):
        cases.extend(
            estimator_checks_generator(
                estimator, legacy=True, expected_failed_checks=NOT_APPLICABLE, mark="skip"
            )
        )
    return cases


def check_id(value: Any) -> str:
    if isinstance(value, functools.partial):
        value = value.func
    return getattr(value, "__name__", type(value).__name__)


@pytest.mark.parametrize(("estimator", "check"), generated_checks(), ids=check_id)
def test_scikit_learn_estimator_check(
    service: ServiceProcess, estimator: Any, check: Callable[[Any], None]
) -> None:
    estimator.set_params(base_url=service.url)
    check(estimator)


def test_clone_and_set_params_keep_every_argument_as_given() -> None:
    estimator = RemoteMLPRegressor("http://elsewhere:8000", hidden_layers=(4, 2), epochs=7)
    params = clone(estimator).get_params()
    assert params == estimator.get_params()
    assert (params["base_url"], params["hidden_layers"], params["epochs"]) == (
        "http://elsewhere:8000",
        (4, 2),
        7,
    )
    assert estimator.set_params(activation="relu").activation == "relu"


def test_fitted_attributes_describe_the_remote_model(service: ServiceProcess) -> None:
    estimator = RemoteMLPRegressor(service.url, **TINY).fit(X, Y)
    assert estimator.n_features_in_ == 3 and estimator.n_outputs_ == 1
    assert len(estimator.loss_curve_) == estimator.n_iter_ == 40
    assert estimator.loss_curve_[-1] < estimator.loss_curve_[0]
    assert not hasattr(estimator, "validation_scores_")
    with Client(service.url) as client:
        assert client.get_job(estimator.model_id_).status == "succeeded"
    assert estimator.predict(X[:5]).shape == (5,)
    again = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(again.predict(X[:5]), estimator.predict(X[:5]))


def test_a_validation_split_gives_validation_scores_and_early_stopping(
    service: ServiceProcess,
) -> None:
    estimator = RemoteMLPRegressor(
        service.url,
        hidden_layers=(16,),
        epochs=2000,
        batch_size=16,
        learning_rate=0.5,
        validation_fraction=0.25,
        early_stopping_patience=3,
    ).fit(X, Y)
    assert 3 < estimator.n_iter_ < 2000
    assert len(estimator.validation_scores_) == len(estimator.loss_curve_) == estimator.n_iter_


def test_a_pipeline_with_a_scaler_is_cross_validated(service: ServiceProcess) -> None:
    pipeline = make_pipeline(
        StandardScaler(), RemoteMLPRegressor(service.url, input_scaling="none", **TINY)
    )
    scores = cross_val_score(pipeline, X, Y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8


def test_a_grid_search_trains_every_candidate_on_the_service(service: ServiceProcess) -> None:
    search = GridSearchCV(
        RemoteMLPRegressor(service.url, **TINY),
        {"hidden_layers": [2, (16,)], "activation": ["tanh", "relu"]},
        cv=2,
    ).fit(X, Y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.predict(X[:3]).shape == (3,)


def test_labels_of_any_type_come_back_as_given(service: ServiceProcess) -> None:
    words = np.where(X[:, 0] > 0, "right", np.where(X[:, 1] > 0, "up", "down"))
    classifier = RemoteMLPClassifier(service.url, **TINY).fit(X, words)
    assert list(classifier.classes_) == ["down", "right", "up"]
    probabilities = classifier.predict_proba(X)
    np.testing.assert_array_equal(
        classifier.predict(X), classifier.classes_[probabilities.argmax(axis=1)]
    )
    assert classifier.score(X, words) > 0.8
    numbers = RemoteMLPClassifier(service.url, **TINY).fit(X, (X[:, 0] > 0) * 2.0 - 1.0)
    assert numbers.classes_.tolist() == [-1.0, 1.0] and numbers.predict(X[:2]).dtype == float
    with Client(service.url) as client:
        assert client.get_model(classifier.model_id_).classes == ("down", "right", "up")
        assert client.get_model(numbers.model_id_).classes == (0, 1)  # trained as indices


def test_data_frame_columns_name_the_model_s_features(service: ServiceProcess) -> None:
    frame = pd.DataFrame(X, columns=["speed", "angle", "mass"])
    estimator = RemoteMLPRegressor(service.url, **TINY).fit(frame, Y)
    assert list(estimator.feature_names_in_) == ["speed", "angle", "mass"]
    with Client(service.url) as client:
        assert client.get_model(estimator.model_id_).feature_names == ("speed", "angle", "mass")


def test_a_fit_that_gives_up_waiting_cancels_its_job(service: ServiceProcess) -> None:
    estimator = RemoteMLPRegressor(
        service.url, hidden_layers=(64,), epochs=100_000, batch_size=8, timeout=0.5
    )
    with pytest.raises(WaitTimeout) as gave_up:
        estimator.fit(X, Y)
    with Client(service.url) as client:
        assert client.wait(gave_up.value.job, timeout=30).status == "cancelled"
    assert not hasattr(estimator, "model_id_")
