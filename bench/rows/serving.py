"""Rows 3-4: predict under concurrent load (hey) vs MLServer and the naive FastAPI endpoint."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import baselines, hey, jobs
from bench.report import Row
from bench.service import running_service
from bench.settings import Options
from bench.stats import median
from bench.targets import TARGETS

OURS, OURS_V2, NAIVE, MLSERVER = "ours", "ours (v2)", "naive FastAPI", "MLServer"


@dataclass
class Endpoint:
    url: str
    bodies: dict[int, Path]  # rows per request -> body file
    results: dict[int, list[hey.HeyResult]] = field(default_factory=dict)


def _bodies(tmp: Path, name: str, encode: Callable[[int], bytes]) -> dict[int, Path]:
    paths = {}
    for n_rows in (1, 1000):
        path = tmp / f"{name.replace(' ', '-')}-{n_rows}.json"
        path.write_bytes(encode(n_rows))
        paths[n_rows] = path
    return paths


def _check(endpoint: Endpoint) -> None:
    """One request per body before loading it: a 4xx would otherwise be measured as speed."""
    for path in endpoint.bodies.values():
        response = httpx.post(endpoint.url, content=path.read_bytes(),
                              headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
        response.raise_for_status()


def _load(endpoints: dict[str, Endpoint], rows: int, clients: int, options: Options,
          log: Callable[[str], None]) -> None:  # fmt: skip
    for endpoint in endpoints.values():
        hey.run(endpoint.url, endpoint.bodies[rows], clients, 1.0)  # warm-up, discarded
    names = list(endpoints)
    for rep in range(options.load_reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            result = hey.run(endpoints[name].url, endpoints[name].bodies[rows], clients,
                             options.load_seconds)  # fmt: skip
            endpoints[name].results.setdefault(rows, []).append(result)
            log(f"[{'3' if rows == 1 else '4'}] {name}, {rows} row(s), {clients} clients: "
                f"{result.requests_per_s:,.0f} req/s, p99 {result.p99_ms:.1f} ms")  # fmt: skip


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    wanted = [n for n in (1, 1000) if {1: "3", 1000: "4"}[n] in options.rows]
    if not hey.available():
        return _rows(wanted, {}, {NAIVE: hey.MISSING, MLSERVER: hey.MISSING}, options, hey.MISSING)
    endpoints: dict[str, Endpoint] = {}
    missing: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        service = stack.enter_context(running_service("serving"))
        model = service.train(jobs.encode(jobs.sinc_job(2_500, epochs=100)))
        endpoints[OURS] = Endpoint(f"{service.url}/models/{model['id']}/predict",
                                   _bodies(tmp, OURS, jobs.ours_predict_body))  # fmt: skip
        # The same service through the Open Inference Protocol: MLServer's own protocol.
        endpoints[OURS_V2] = Endpoint(f"{service.url}/v2/models/{model['id']}/infer",
                                      _bodies(tmp, OURS_V2, jobs.ours_v2_body))  # fmt: skip
        baselines.make_sinc_dir(tmp / "sinc")
        starters = {NAIVE: (baselines.naive_fastapi, jobs.ours_predict_body),
                    MLSERVER: (baselines.mlserver, jobs.mlserver_body)}  # fmt: skip
        for name, (start, encode) in starters.items():
            try:
                server = stack.enter_context(start(tmp / "sinc"))
                endpoint = Endpoint(server.predict_url, _bodies(tmp, name, encode))
                _check(endpoint)
                endpoints[name] = endpoint
            except Exception as exc:  # a baseline that can't run is reported, not fatal
                missing[name] = f"{type(exc).__name__}: {exc}"[:300]
                log(f"[3/4] {name} unavailable: {missing[name]}")
        _check(endpoints[OURS])
        _check(endpoints[OURS_V2])
        for rows, clients in ((1, 32), (1000, 8)):
            if rows in wanted:
                _load(endpoints, rows, clients, options, log)
    return _rows(wanted, endpoints, missing, options, "")


def _rows(wanted: list[int], endpoints: dict[str, Endpoint], missing: dict[str, str],
          options: Options, skipped: str) -> list[Row]:  # fmt: skip
    def figure(name: str, rows: int, pick: Callable[[hey.HeyResult], float]) -> float | None:
        found = endpoints.get(name)
        return median([pick(r) for r in found.results[rows]]) if found else None

    def rps(r: hey.HeyResult) -> float:
        return r.requests_per_s

    def rows_per_s(r: hey.HeyResult) -> float:
        return r.requests_per_s * 1000

    def p99(r: hey.HeyResult) -> float:
        return r.p99_ms

    runs = f"{options.load_reps} × {options.load_seconds:g} s hey runs per server, medians"
    errors = "; ".join(f"{name} {rows}-row: {share:.1%} errors"
                       for name, e in endpoints.items() for rows, rs in e.results.items()
                       if (share := max(r.error_share for r in rs)) > 0.001)  # fmt: skip
    out: list[Row] = []
    if 1 in wanted:
        what = "1-row predict, 32 clients"
        naive_p99 = figure(NAIVE, 1, p99)
        out += [
            Row("3a", f"{what}: req/s vs MLServer", "req/s", figure(OURS, 1, rps),
                figure(MLSERVER, 1, rps), "(MLServer)", TARGETS["3a"],
                unavailable=missing.get(MLSERVER, skipped), note=runs),
            Row("3b", f"{what}: req/s vs naive", "req/s", figure(OURS, 1, rps),
                figure(NAIVE, 1, rps), "(naive FastAPI)", TARGETS["3b"],
                unavailable=missing.get(NAIVE, skipped), note=errors),
            Row("3c", f"{what}: p99 latency", "ms", figure(OURS, 1, p99),
                figure(MLSERVER, 1, p99), "(MLServer)", TARGETS["3c"],
                note=f"naive FastAPI p99 {naive_p99:.0f} ms" if naive_p99 else ""),
            Row("3d", f"{what}, both on the v2 protocol: req/s vs MLServer", "req/s",
                figure(OURS_V2, 1, rps), figure(MLSERVER, 1, rps), "(MLServer)", TARGETS["3d"],
                unavailable=missing.get(MLSERVER, skipped)),
        ]  # fmt: skip
    if 1000 in wanted:
        what = "1,000-row predict, 8 clients"
        out += [
            Row("4a", f"{what}: rows/s vs MLServer", "rows/s", figure(OURS, 1000, rows_per_s),
                figure(MLSERVER, 1000, rows_per_s), "(MLServer)", TARGETS["4a"],
                unavailable=missing.get(MLSERVER, skipped)),
            Row("4b", f"{what}: rows/s vs naive", "rows/s", figure(OURS, 1000, rows_per_s),
                figure(NAIVE, 1000, rows_per_s), "(naive FastAPI)",
                unavailable=missing.get(NAIVE, skipped)),
            Row("4c", f"{what}, both on the v2 protocol: rows/s vs MLServer", "rows/s",
                figure(OURS_V2, 1000, rows_per_s), figure(MLSERVER, 1000, rows_per_s),
                "(MLServer)", TARGETS["4c"], unavailable=missing.get(MLSERVER, skipped)),
        ]  # fmt: skip
    for row in out:
        row.samples = {
            name: [r.requests_per_s for r in e.results.get(1 if row.key[0] == "3" else 1000, [])]
            for name, e in endpoints.items()
        }
    return out
