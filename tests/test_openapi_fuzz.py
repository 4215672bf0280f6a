"""Property-based fuzzing of the API with schemathesis, against its own OpenAPI schema.

Every generated request (valid or not) must get a response that is not a 5xx and that
conforms to the schema: documented status code, content type and body shape.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.api.app import create_app
from service.config import Settings
from service.storage.migrate import upgrade
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e
KEY = "fuzz-key"


# The schema the app publishes (building it needs no database), fuzzed against a live process.
# The event streams are left out: with no worker here a queued job never ends, so its stream
# (and GET /events, which never ends) would hold every case open for ever. tests/test_events.py
# and tests/e2e/test_events.py test them.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(
    path=["/jobs/{job_id}/events", "/events"]
)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    database_url = f"sqlite:///{folder / 'service.db'}"
    upgrade(database_url)
    # The API alone: fuzzed jobs are accepted and queued, but nothing trains them.
    # With a key configured, so the schema's bearer scheme is enforced and fuzzed too (a
    # generated bad key must get 401).
    server = ServiceProcess(
        database_url, "api", log_path=folder / "api.log", env={"SERVICE_API_KEYS": KEY}
    ).start()
    try:
        yield server.url
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log_tail(100_000)


@schema.auth()
class ApiKey:
    """The valid key on every case, except those schemathesis generates without one."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return KEY

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_api: str) -> None:
    # Cross-field rules (len(x) == len(y), a validation split that leaves rows, an
    # Idempotency-Key reused with another body) rightly refuse some schema-valid bodies.
    case.call_and_validate(base_url=live_api, excluded_checks=[positive_data_acceptance])
