"""docker-compose.yml runs the fleet: PostgreSQL, a one-shot migrate, API replicas behind one
address and worker replicas, all configured by settings the service really reads. Without a
Docker engine here, the file is checked as data (and by `docker-compose config` where the tool
is installed: it validates against Compose's own schema without an engine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from service.__main__ import parse_args
from service.config import Settings
from tests.support import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
# What a user exports before `docker compose up` (the two required variables).
USER_ENV = {"SERVICE_API_KEYS": "key-one,key-two", "SERVICE_OWNER_SECRET": "a-shared-secret"}
IMAGE = "nn-training-service"
REQUIRED = re.compile(r"^\$\{(?P<name>\w+):\?[^}]+\}$")
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::(?P<kind>[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (error when unset or empty), and
    $$ for a literal $."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, arg = match.group("name", "kind", "arg")
        found = env.get(name, "")
        if kind == "?" and not found:
            raise KeyError(f"{name}: {arg}")
        return found or (arg if kind == "-" else "")

    return VARIABLE.sub(substitute, value).replace("$$", "$")


def compose(text: str | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text or COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def ours(all_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run our image (the others are postgres and the proxy)."""
    return {name: s for name, s in all_services.items() if s.get("image") == IMAGE}


def environment(service: dict[str, Any], env: Mapping[str, str] = USER_ENV) -> dict[str, str]:
    return {name: interpolate(str(value), env) for name, value in service["environment"].items()}


def assert_entry_point(command: list[str]) -> None:
    assert command[:3] == ["python", "-m", "service"], command
    parse_args(command[3:])  # argparse exits on an unknown command or flag


def test_the_fleet_topology() -> None:
    fleet = services()
    assert set(fleet) == {"postgres", "migrate", "api", "proxy", "worker"}
    assert set(ours(fleet)) == {"migrate", "api", "worker"}
    assert fleet["postgres"]["image"].startswith("postgres:16")

    # migrate runs once, after PostgreSQL accepts connections; it is never restarted.
    assert parse_args(fleet["migrate"]["command"][3:]).command == "migrate"
    assert fleet["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert fleet["migrate"]["restart"] == "no"

    # The long-running roles start only once the schema is in place, and come back after a crash.
    for role in ("api", "worker"):
        assert parse_args(fleet[role]["command"][3:]).command == role
        assert fleet[role]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert fleet[role]["deploy"]["replicas"] == 2
        assert fleet[role]["restart"] == "unless-stopped"
    # A worker hands its job back on SIGTERM: compose must wait for that, not kill it at 10 s.
    assert fleet["worker"]["stop_grace_period"] == "30s"


def test_every_command_is_a_real_entry_point() -> None:
    for service in ours(services()).values():
        assert_entry_point(service["command"])


def test_postgres_keeps_its_data_and_says_when_it_is_ready() -> None:
    postgres = services()["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    # Over TCP: the temporary server of the first start listens on the Unix socket only.
    assert "--host" in test
    environment_ = environment(postgres)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(environment_)

    # Its data lives on a named volume, declared at the top level (so `down` keeps it).
    declared = set(compose()["volumes"])
    for service in services().values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared, f"{mount}: not a named volume"
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]


def test_every_variable_is_a_real_setting_with_a_valid_value() -> None:
    fleet = ours(services())
    for name, service in fleet.items():
        env = environment(service)
        for variable in env:
            assert variable.startswith("SERVICE_"), (name, variable)
            assert variable.removeprefix("SERVICE_").lower() in Settings.model_fields, (
                name,
                variable,
            )
        # Settings validates each value as the process would at start (a bad one raises).
        Settings.model_validate(
            {variable.removeprefix("SERVICE_").lower(): value for variable, value in env.items()}
        )


def test_every_process_uses_the_postgres_service_as_its_database() -> None:
    fleet = services()
    postgres = environment(fleet["postgres"])
    urls = {environment(s)["SERVICE_DATABASE_URL"] for s in ours(fleet).values()}
    assert len(urls) == 1
    url = make_url(urls.pop())
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "postgres"
    assert (url.username, url.password, url.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    # A password set by the user reaches both the server and the URL.
    custom = {**USER_ENV, "POSTGRES_PASSWORD": "s3cret"}
    assert environment(fleet["postgres"], custom)["POSTGRES_PASSWORD"] == "s3cret"
    assert make_url(environment(fleet["api"], custom)["SERVICE_DATABASE_URL"]).password == "s3cret"


def test_keys_and_the_owner_secret_are_required_and_shared() -> None:
    """Without keys the API would bind to 127.0.0.1, unreachable through a container port; a
    secret left to each replica would differ per container, and each would see other owners."""
    fleet = services()
    for role in ("api", "migrate"):
        raw = fleet[role]["environment"]
        for variable in ("SERVICE_API_KEYS", "SERVICE_OWNER_SECRET"):
            required = REQUIRED.match(raw[variable])
            assert required is not None and required.group("name") == variable, (role, raw)
            with pytest.raises(KeyError, match=variable):
                environment(fleet[role], {k: v for k, v in USER_ENV.items() if k != variable})
    # migrate re-keys old owners: it must digest with exactly what the API replicas use.
    shared = ("SERVICE_API_KEYS", "SERVICE_ADMIN_KEYS", "SERVICE_OWNER_SECRET")
    assert {v: fleet["api"]["environment"][v] for v in shared} == {
        v: fleet["migrate"]["environment"][v] for v in shared
    }


def test_one_address_reaches_every_api_replica() -> None:
    fleet = services()
    api, proxy = fleet["api"], fleet["proxy"]
    # Replicas publish no host port (two cannot share one); the proxy publishes the address.
    assert "ports" not in api
    listen = parse_args(api["command"][3:])
    assert listen.host == "0.0.0.0"
    assert [str(port) for port in api["expose"]] == [str(listen.port)]
    published = interpolate(proxy["ports"][0], {})
    assert published == f"8000:{listen.port}"
    assert interpolate(proxy["ports"][0], {"API_PORT": "9000"}) == f"9000:{listen.port}"

    config = interpolate(proxy["command"][-1], {})
    assert f"listen {listen.port};" in config
    # By name through Docker's DNS at request time: every replica, also one added later.
    assert "resolver 127.0.0.11" in config
    assert f"set $api http://api:{listen.port};" in config and "proxy_pass $api;" in config
    # Job bodies carry training data: the API's own limit applies, not nginx's 1 MiB default.
    assert "client_max_body_size 0;" in config
    # Only once the replicas answer their health check.
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def uncommented_gpu_worker() -> str:
    """The file with its commented GPU worker switched on, as a user would do it."""
    lines = COMPOSE_FILE.read_text().splitlines()
    start = lines.index("  # worker-gpu:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  #"))
    return "\n".join(
        [
            *lines[:start],
            *(line.replace("  # ", "  ", 1) for line in lines[start:end]),
            *lines[end:],
        ]
    )


def test_the_commented_gpu_worker_is_valid_once_uncommented() -> None:
    gpu = compose(uncommented_gpu_worker())["services"]["worker-gpu"]
    assert parse_args(gpu["command"][3:]).command == "worker"
    env = environment(gpu)
    assert env["SERVICE_DEVICE"] == "cuda"
    Settings(device=env["SERVICE_DEVICE"])
    assert env["SERVICE_DATABASE_URL"] == environment(services()["worker"])["SERVICE_DATABASE_URL"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert gpu["depends_on"] == services()["worker"]["depends_on"]
    assert "TORCH_INDEX" in gpu["build"]["args"]  # the CPU image's torch cannot use the GPU


def test_dockerfile_runs_a_real_entry_point_and_carries_the_migrations() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    assert_entry_point(json.loads(cmd.group(1)))
    # `migrate` reads migrations/ beside the package; the project install brings psycopg.
    assert re.search(r"^COPY migrations ", dockerfile, re.M)
    assert re.search(r"^RUN pip install .* -e \.$", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_INDEX=", dockerfile, re.M)


def compose_tool() -> list[str] | None:
    """The Compose CLI: the v2 plugin (`docker compose`) or Debian's docker-compose (v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        found = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if found.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


def run_compose_config(
    text: str, env: Mapping[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    tool = compose_tool()
    if tool is None:
        pytest.skip(
            "no Compose CLI to validate with (apt-get install docker-compose, or the docker "
            "compose plugin): the checks above still ran"
        )
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    # Only what the user would set: no SERVICE_* or POSTGRES_* of this machine leaks in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "POSTGRES_"))}
    return subprocess.run(
        [*tool, "--file", str(path), "--project-directory", str(REPO), "config"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("variant", ["as shipped", "with the GPU worker"])
def test_compose_itself_accepts_the_file(variant: str, tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text() if variant == "as shipped" else uncommented_gpu_worker()
    result = run_compose_config(text, USER_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["api"]["environment"]["SERVICE_API_KEYS"] == "key-one,key-two"


def test_compose_refuses_to_start_without_the_api_keys(tmp_path: Path) -> None:
    without_keys = {k: v for k, v in USER_ENV.items() if k != "SERVICE_API_KEYS"}
    result = run_compose_config(COMPOSE_FILE.read_text(), without_keys, tmp_path)
    assert result.returncode != 0
    assert "set SERVICE_API_KEYS" in result.stderr
