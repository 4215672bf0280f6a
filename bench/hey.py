"""The `hey` load generator: run it for a duration, read req/s and latency percentiles."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MISSING = "`hey` not found: install it with `apt-get install -y hey` (Debian package)"


@dataclass(frozen=True)
class HeyResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ok: int  # 2xx responses
    failed: int  # non-2xx responses plus transport errors

    @property
    def error_share(self) -> float:
        total = self.ok + self.failed
        return self.failed / total if total else 1.0


def available() -> bool:
    return shutil.which("hey") is not None


def run(url: str, body: Path, concurrency: int, seconds: float) -> HeyResult:
    argv = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST"]
    argv += ["-T", "application/json", "-D", str(body), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"hey failed ({done.returncode}): {done.stderr[-500:]}")
    return parse(done.stdout)


def parse(text: str) -> HeyResult:
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    p50 = re.search(r"50%+ in ([0-9.]+) secs", text)
    # hey prints no 99% line under 100 responses; nearest-rank p99 is then the slowest one.
    p99 = re.search(r"99%+ in ([0-9.]+) secs", text) or re.search(r"Slowest:\s+([0-9.]+)", text)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"could not read hey's summary:\n{text[-1500:]}")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+(?!.*responses)", text, re.M))
    ok = sum(n for code, n in codes.items() if 200 <= code < 300)
    failed = sum(n for code, n in codes.items() if not 200 <= code < 300) + errors
    return HeyResult(
        float(rps.group(1)), float(p50.group(1)) * 1e3, float(p99.group(1)) * 1e3, ok, failed
    )
