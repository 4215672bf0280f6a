"""docker-compose.yml parses; its commands (and the Dockerfile's) are real entry points."""

from __future__ import annotations

import json
import re

import yaml

from service.__main__ import parse_args
from tests.support import REPO


def compose() -> dict:  # type: ignore[type-arg]
    loaded: dict = yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[type-arg]
    return loaded


def assert_entry_point(command: list[str]) -> None:
    assert command[:3] == ["python", "-m", "service"], command
    parse_args(command[3:])  # argparse exits on an unknown command or flag


def test_compose_has_an_api_and_a_worker_sharing_the_database() -> None:
    services = compose()["services"]
    assert {"api", "worker", "migrate"} <= set(services)
    urls = {services[name]["environment"]["SERVICE_DATABASE_URL"] for name in services}
    assert urls == {"sqlite:////data/service.db"}
    for name in services:
        assert "data:/data" in services[name]["volumes"]
    assert "data" in compose()["volumes"]
    assert services["api"]["ports"] == ["8000:8000"]
    for role in ("api", "worker"):
        assert (
            services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )


def test_compose_commands_are_real_entry_points() -> None:
    services = compose()["services"]
    for service in services.values():
        assert_entry_point(service["command"])
    assert parse_args(services["api"]["command"][3:]).command == "api"
    assert parse_args(services["worker"]["command"][3:]).command == "worker"


def test_dockerfile_command_is_a_real_entry_point() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    assert_entry_point(json.loads(cmd.group(1)))
