"""An oversized body's 413 reaches every client, also one that closes the connection after
its request (Python's urllib sends `Connection: close`), with or without a Content-Length."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.reliability.conftest import Start

pytestmark = pytest.mark.e2e

TOO_LARGE = 9 * 1024 * 1024  # over the default 8 MiB limit


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_urllib_reads_the_413_instead_of_a_reset(start: Start, framing: str) -> None:
    server = start("api")
    body: bytes | Iterator[bytes] = (
        b" " * TOO_LARGE if framing == "content-length" else chunks(TOO_LARGE)
    )
    request = urllib.request.Request(
        f"{server.url}/jobs",
        data=body,  # an iterable without a length goes out chunked
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "payload_too_large"
