"""The client stands alone: it imports nothing of the server, so it can ship on its own."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

SERVER_LIBRARIES = ("torch", "sqlalchemy", "fastapi", "starlette", "pydantic", "uvicorn", "alembic")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def ours_outside_client(modules: set[str]) -> set[str]:
    return {
        name
        for name in modules
        if name.startswith("service.") and not name.startswith("service.client")
    }


def test_the_client_imports_nothing_of_the_server() -> None:
    modules = modules_after("import service.client")
    assert ours_outside_client(modules) == set()
    assert top_level(modules).isdisjoint(SERVER_LIBRARIES)
    # The heavy optional libraries load only with the piece that needs them. (Not rich: httpx
    # loads it for its own command line wherever it is installed.)
    assert top_level(modules).isdisjoint({"sklearn", "scipy", "matplotlib"})


def test_the_estimators_add_scikit_learn_only() -> None:
    modules = modules_after("from service.client import RemoteMLPRegressor")
    assert "sklearn" in top_level(modules)
    assert ours_outside_client(modules) == set()
    assert top_level(modules).isdisjoint(SERVER_LIBRARIES)


def test_the_client_commands_import_nothing_of_the_server() -> None:
    """`python -m service jobs` (any client command) loads only the client; -X importtime
    names every module the command imported."""
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "service",
            "jobs",
            "--url",
            "http://127.0.0.1:9",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "no answer from the service" in result.stderr
    imported = {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    # __main__ itself and the stdlib-only process guard it takes a flag's name from.
    allowed = {"service.__main__", "service.process_guard"}
    assert ours_outside_client(imported) - allowed == set()
    assert top_level(imported).isdisjoint(SERVER_LIBRARIES)
