"""Wire formats of the inference server: what the two protocols share.

Decoders turn a request body into a `schema.Batch` (or raise a `problems` exception with a
sentence); encoders turn predictions into the response body each protocol defines:
`mlflow_protocol` (MLflow scoring, JSON and CSV) and `v2_protocol` (the KServe Open
Inference Protocol v2, JSON and binary tensors). This module holds what both use: parsing a
JSON body, serializing a response, and the error body.
"""

from __future__ import annotations

import json
from typing import Any

import numpy.typing as npt
import orjson

from mlgitops.server import problems


def parse_json(body: bytes) -> Any:
    """Parse a JSON body; NaN/Infinity literals parse (validation then takes NaN as a
    missing value where the column allows one, and refuses the rest by column)."""
    if not body.strip():
        raise problems.BadRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # the stdlib accepts NaN/Infinity, which some clients send
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise problems.BadRequest(f"The request body is not valid JSON ({exc}).") from None


def dumps(value: Any) -> bytes:
    """Serialize a response body (numpy scalars and arrays included)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def to_list(arr: npt.NDArray[Any]) -> list[Any]:
    """An array as JSON-ready values (an object that is no JSON scalar becomes its text)."""
    if arr.dtype.kind in "OUS":
        return [
            v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
            for v in arr.tolist()
        ]
    out: list[Any] = arr.tolist()
    return out


def error_body(message: str) -> bytes:
    """The ``{"error": <sentence>}`` body of a refused request."""
    return orjson.dumps({"error": message})
