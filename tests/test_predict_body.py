"""The predict hot path parses bodies itself: it must refuse what the schema refuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.api.json_io import rows_of_numbers
from service.errors import RequestInvalid

BAD_BODIES: dict[str, Any] = {
    "not an object": [[1.0, 2.0]],
    "no inputs": {"rows": [[1.0]]},
    "extra field": {"inputs": [[1.0]], "colour": "blue"},
    "inputs not a list": {"inputs": 3},
    "empty inputs": {"inputs": []},
    "flat list": {"inputs": [1.0, 2.0]},
    "empty row": {"inputs": [[]]},
    "ragged rows": {"inputs": [[1.0, 2.0], [3.0]]},
    "strings": {"inputs": [["1.0", "2.0"]]},
    "null": {"inputs": [[None, 1.0]]},
    "nested too deep": {"inputs": [[[1.0]]]},
    "bools": {"inputs": [[True, False]]},
    "integer too large for a double": {"inputs": [[10**400]]},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_are_refused_with_a_reason(body: Any) -> None:
    with pytest.raises(RequestInvalid) as caught:
        rows_of_numbers(body)
    assert caught.value.detail


def test_ints_and_floats_become_a_float_matrix() -> None:
    matrix = rows_of_numbers({"inputs": [[1, 2.5], [-3, 4]]})
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, [[1.0, 2.5], [-3.0, 4.0]])
