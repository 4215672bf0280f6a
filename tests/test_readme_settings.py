"""The README's configuration table lists every setting, with the defaults the code has."""

from __future__ import annotations

import re

from service.config import Settings
from tests.support import REPO


def configuration_rows() -> list[tuple[list[str], list[str]]]:
    """(variables, defaults) of each row of the README's Configuration table."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`SERVICE_"):
            rows.append(
                (re.findall(r"`SERVICE_(\w+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1]))
            )
    return rows


def test_every_setting_is_in_the_readme_once() -> None:
    listed = [name.lower() for names, _ in configuration_rows() for name in names]
    assert sorted(listed) == sorted(Settings.model_fields)


def test_the_readme_s_defaults_are_the_code_s() -> None:
    for names, defaults in configuration_rows():
        if len(defaults) != len(names):  # "none", "chosen per job": described, not a value
            continue
        for name, shown in zip(names, defaults, strict=True):
            default = Settings.model_fields[name.lower()].default
            assert shown == str(default).lower() or float(shown) == default, name
