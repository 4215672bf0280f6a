"""Result rows and their rendering: a plain-text table for the terminal, markdown for a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Unit = Literal["s", "ms", "req/s", "rows/s", "MB", "loss", "jobs/min", "%"]


@dataclass(frozen=True)
class Target:
    """`on="ratio"`: project/baseline is compared; `on="project"`: the project's own figure."""

    op: Literal["<=", ">="]
    value: float
    on: Literal["ratio", "project"] = "ratio"
    stretch: float | None = None
    unit: str = ""

    def met(self, figure: float, goal: float | None = None) -> bool:
        goal = self.value if goal is None else goal
        return figure <= goal if self.op == "<=" else figure >= goal

    def describe(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        text = f"{sign} {self.value:g}{'×' if self.on == 'ratio' else ' ' + self.unit}".rstrip()
        if self.stretch is not None:
            text += f" (stretch {sign} {self.stretch:g}×)"
        return text


@dataclass
class Row:
    key: str
    what: str
    unit: Unit
    project: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""
    unavailable: str = ""  # why the baseline (or, with project None, the row) has no figure
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.project is None or not self.baseline:
            return None
        return self.project / self.baseline

    def verdict(self) -> str:
        if self.project is None:
            return "skipped"
        if self.target is None:
            return "info"
        figure = self.ratio if self.target.on == "ratio" else self.project
        if figure is None:
            return "n/a"
        mark = "PASS" if self.target.met(figure) else "FAIL"
        if self.target.stretch is not None:
            stretch = "PASS" if self.target.met(figure, self.target.stretch) else "FAIL"
            mark += f" (stretch {stretch})"
        return mark


def fmt(value: float | None, unit: Unit) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "rows/s":
        return f"{value / 1e3:,.0f}k rows/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "jobs/min":
        return f"{value:,.0f} jobs/min"
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:.5f}"


HEADER = ("#", "what", "project (median)", "baseline (median)", "ratio", "target", "result")


def cells(row: Row) -> tuple[str, ...]:
    baseline = fmt(row.baseline, row.unit) if row.baseline is not None else ""
    if row.baseline_name:
        baseline = (
            f"{baseline} {row.baseline_name}".strip()
            if row.baseline is not None
            else (f"{row.baseline_name}: unavailable")
        )
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
    target = row.target.describe() if row.target else "—"
    return (
        row.key,
        row.what,
        fmt(row.project, row.unit),
        baseline or "—",
        ratio,
        target,
        row.verdict(),
    )


def notes(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        for text in (row.unavailable, row.note):
            if text:
                lines.append(f"[{row.key}] {text}")
    return lines


def text_table(rows: list[Row]) -> str:
    table = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*out, "", *notes(rows)])


def markdown(rows: list[Row], header: list[str]) -> str:
    out = [*header, "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    out += ["", *(f"- {line}" for line in notes(rows))]
    return "\n".join(out) + "\n"
