"""bench/README.md states the targets the bench checks: its figures table says the same as
bench/targets.py, row for row."""

from __future__ import annotations

from bench.targets import TARGETS
from tests.support import REPO


def readme_targets() -> dict[str, str]:
    """Row key -> target cell of the README's latest-figures table (rows that have one)."""
    readme = (REPO / "bench" / "README.md").read_text()
    cells: dict[str, str] = {}
    for line in readme.splitlines():
        parts = [part.strip() for part in line.strip().strip("|").split("|")]
        if len(parts) == 7 and parts[0][:1].isdigit() and parts[5] != "—":
            cells[parts[0]] = parts[5]
    return cells


def test_the_readme_states_every_target_as_the_code_checks_it() -> None:
    stated = readme_targets()
    assert stated == {key: target.describe() for key, target in TARGETS.items()}
