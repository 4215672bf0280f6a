"""`python -m bench [--quick] [--only ROW ...]`: run the rows, print the table, save it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

from bench import hey, machine
from bench.report import Row, markdown, text_table
from bench.rows import datasets, fleet, many_models, pickup, scaling, serving, sweeps, training
from bench.settings import FULL, OUT_DIR, QUICK, ROW_ALIASES, Options

# Row groups in run order; rows 3 and 4 share their servers.
GROUPS: list[tuple[frozenset[str], str, Callable[[Options, Callable[[str], None]], list[Row]]]] = [
    (frozenset("1"), "sinc training vs baselines", training.run),
    (frozenset("2"), "queue pickup", pickup.run),
    (frozenset("34"), "predict under load", serving.run),
    (frozenset("5"), "many models", many_models.run),
    (frozenset("6"), "scaling", scaling.run),
    (frozenset("7"), "fleet: workers, claims, idle CPU", fleet.run),
    (frozenset("8"), "datasets: a 1M-row CSV upload", datasets.run),
    (frozenset("9"), "sweeps: 16 stacked trials", sweeps.run),
]


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer reps, 3 s load runs, smaller sizes"
    )
    parser.add_argument("--only", action="append", metavar="ROW",
                        help="row 1-9 or name (training, pickup, predict1, predict1000, models, "
                             "scaling, fleet, datasets, sweeps); repeatable")  # fmt: skip
    parser.add_argument("--duration", type=float, help="seconds per hey run (rows 3-4)")
    parser.add_argument("--reps", type=int, help="row 1 repetitions")
    parser.add_argument("--load-reps", type=int, help="hey runs per server (rows 3-4)")
    parser.add_argument("--models", type=int, help="row 5 model count")
    args = parser.parse_args(argv)
    options = QUICK if args.quick else FULL
    if args.only:
        unknown = [r for r in args.only if r not in ROW_ALIASES]
        if unknown:
            parser.error(f"unknown row(s) {unknown}; choose from {sorted(ROW_ALIASES)}")
        options = dataclasses.replace(options, rows=frozenset(ROW_ALIASES[r] for r in args.only))
    overrides = {"load_seconds": args.duration, "reps": args.reps, "load_reps": args.load_reps,
                 "models": args.models}  # fmt: skip
    return dataclasses.replace(options, **{k: v for k, v in overrides.items() if v is not None})


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`, which stops the servers


def run_groups(options: Options) -> tuple[list[Row], bool, list[str]]:
    """The rows of each selected group; a group that fails becomes a skipped row, not a crash
    of the whole run (its title is listed, so the run still exits non-zero)."""
    rows: list[Row] = []
    crashed: list[str] = []
    try:
        for keys, title, run in GROUPS:
            if not keys & options.rows:
                continue
            log(f"== rows {'/'.join(sorted(keys & options.rows))}: {title}")
            started = time.monotonic()
            try:
                rows += run(options, log)
            except Exception as exc:
                traceback.print_exc()
                reason = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                crashed.append(title)
                rows.append(
                    Row("/".join(sorted(keys & options.rows)), title, "s", unavailable=reason)
                )
            log(f"   ({time.monotonic() - started:.0f} s)")
    except KeyboardInterrupt:
        log("interrupted: servers stopped; the table shows the rows finished so far")
        return rows, True, crashed
    return rows, False, crashed


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if options.rows & {"3", "4"} and not hey.available():
        log(f"warning: {hey.MISSING}; rows 3-4 will be skipped")
    header = machine.describe()
    for line in header:
        log(line)
    rows, interrupted, crashed = run_groups(options)
    header.append(f"load average at end: {machine.load_note()}")
    table = text_table(rows)
    print("\n" + "\n".join(header) + "\n\n" + table)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    settings_line = f"settings: {json.dumps(dataclasses.asdict(options), default=sorted)}"
    (OUT_DIR / "latest.md").write_text(markdown(rows, ["# Benchmark", "", *(f"- {h}" for h in
                                                        [*header, settings_line])]))  # fmt: skip
    samples = [{"key": r.key, "what": r.what, "samples": r.samples} for r in rows]
    (OUT_DIR / "latest.json").write_text(json.dumps(samples, indent=1))
    log(f"wrote {OUT_DIR / 'latest.md'}")
    return exit_status(rows, interrupted, crashed)


def exit_status(rows: list[Row], interrupted: bool, crashed: list[str]) -> int:
    """0 only when every row with a target met it and every group ran: CI can gate on it."""
    if interrupted:
        return 130
    failed = [f"{row.key} ({row.what})" for row in rows if row.verdict().startswith("FAIL")]
    for problem in [*(f"row {name} missed its target" for name in failed),
                    *(f"row group '{title}' crashed" for title in crashed)]:  # fmt: skip
        log(f"error: {problem}")
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
