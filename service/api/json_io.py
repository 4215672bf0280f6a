"""JSON in and out of the hot path without pydantic: orjson parses and writes, numpy validates.

orjson refuses NaN, Infinity and numbers that overflow a double, which is what we want, and
serialises numpy arrays directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from service.api.deps import check_json_content_type
from service.errors import RequestInvalid

NUMERIC_KINDS = "iuf"  # signed, unsigned, float: bools and strings are refused


async def read_json(request: Request) -> Any:
    check_json_content_type(request)
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the body is not valid JSON ({exc})") from exc


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def rows_of_numbers(body: Any, field: str = "inputs") -> np.ndarray:
    """`{"inputs": [[...], ...]}` as a float64 matrix, or a 422 naming what is wrong."""
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
    if matrix.dtype.kind not in NUMERIC_KINDS:
        raise RequestInvalid(f"{field}: every value must be a finite number")
    return matrix.astype(np.float64, copy=False)
