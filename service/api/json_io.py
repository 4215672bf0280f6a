"""JSON in and out of the hot path without pydantic: orjson parses and writes, numpy validates.

orjson refuses NaN, Infinity and numbers that overflow a double, which is what we want, and
serialises numpy arrays directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import check_json_content_type
from service.errors import BadRequest, RequestInvalid
from service.tuning import OFF_LOOP_PARSE_BYTES

NUMERIC_KINDS = "iuf"  # signed, unsigned, float: bools and strings are refused


def parse_rows(body: bytes, field: str = "inputs") -> np.ndarray:
    """A `{"inputs": [[...], ...]}` body's rows. Booleans are looked for only when the bytes
    hold an `e` (both `true` and `false` do; plain decimals and the field name do not): one
    byte search, far cheaper than a walk of the rows."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the body is not valid JSON ({exc})") from exc
    return rows_of_numbers(parsed, field, may_hold_booleans=b"e" in body)


async def read_rows(request: Request, field: str = "inputs") -> np.ndarray:
    """The request's rows; a large body is parsed in a worker thread, so it cannot stall
    the event loop for everyone else."""
    check_json_content_type(request)
    body = await request.body()
    if len(body) > OFF_LOOP_PARSE_BYTES:
        return await run_in_threadpool(parse_rows, body, field)
    return parse_rows(body, field)


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def rows_of_numbers(
    body: Any, field: str = "inputs", *, may_hold_booleans: bool = True
) -> np.ndarray:
    """`{"inputs": [[...], ...]}` as a float64 matrix, or a 422 naming what is wrong.

    JSON's true and false are not numbers, though numpy would read them as 1 and 0."""
    if not isinstance(body, dict):
        raise RequestInvalid("the body must be a JSON object")
    unknown = sorted(set(body) - {field})
    if unknown:
        raise RequestInvalid(f"{unknown[0]}: Extra inputs are not permitted")
    if field not in body:
        raise RequestInvalid(f"{field}: Field required")
    rows = body[field]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise RequestInvalid(f"{field}: must be a non-empty list of rows (lists of numbers)")
    try:
        matrix = np.array(rows)
    except ValueError as exc:
        raise RequestInvalid(f"{field}: rows must all have one length") from exc
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise RequestInvalid(f"{field}: each row must be a non-empty list of numbers")
    if matrix.dtype.kind not in NUMERIC_KINDS or (
        may_hold_booleans and any(type(value) is bool for row in rows for value in row)
    ):
        raise RequestInvalid(f"{field}: every value must be a finite number")
    return matrix.astype(np.float64, copy=False)


def numbers_array(data: Any, where: str) -> np.ndarray:
    """A JSON list of numbers, flat or nested, as an array; BadRequest (the standard protocols'
    status) naming `where` otherwise. Booleans are refused, though numpy reads true as 1."""
    if not isinstance(data, list):
        raise BadRequest(f"{where} must be a list of numbers")
    try:
        values = np.array(data)
    except ValueError as exc:
        raise BadRequest(f"{where}: nested lists must be rectangular") from exc
    if values.dtype.kind not in NUMERIC_KINDS or _holds_booleans(data):
        raise BadRequest(f"{where}: every value must be a finite number")
    return values


def _holds_booleans(data: list[Any]) -> bool:
    stack: list[list[Any]] = [data]
    while stack:
        for item in stack.pop():
            if type(item) is bool:
                return True
            if isinstance(item, list):
                stack.append(item)
    return False
