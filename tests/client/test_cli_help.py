"""Each client command's --help describes every argument it takes."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from service.client import cli
from tests.support import REPO


def client_commands() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="python -m service")
    commands = parser.add_subparsers(dest="command")
    cli.add_commands(commands)
    return dict(commands.choices)


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_help_describes_every_argument(command: str) -> None:
    parser = client_commands()[command]
    result = subprocess.run(
        [sys.executable, "-m", "service", command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith(f"usage: python -m service {command}")
    assert parser.description is not None and parser.description.split()[0] in result.stdout
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
        for name in action.option_strings or [action.metavar or action.dest]:
            assert str(name) in result.stdout, name


def test_the_server_commands_are_listed_beside_the_client_s() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("serve", "api", "worker", "migrate", *cli.COMMANDS):
        assert command in result.stdout
