"""KServe Open Inference Protocol v2 wire format (``POST /v2/models/{name}/infer``).

Request: ``{"id"?, "inputs": [tensor, ...], "outputs"?}`` with either one tensor per column
(``shape`` ``[n]`` or ``[n, 1]``) or one 2-D tensor ``[n, columns]`` in signature order.
Response: ``{"model_name", "model_version", "id", "outputs": [{"name": "predict",
"datatype", "shape", "data"}]}``.
Binary tensor data (Triton's extension): the body is the JSON header, then the raw bytes of
each input that has ``parameters.binary_data_size`` (`tensors`); the header's length is in
``Inference-Header-Content-Length``. ``parameters.binary_data_output`` (or the output's
``parameters.binary_data``) asks for the output the same way. MLServer's
``parameters.content_type`` ``pd`` (one tensor per column), ``np`` and ``str`` are accepted.
The gRPC service (`grpc_service`) decodes its tensors with the same checks.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.server import problems, schema, tensors
from mlgitops.server.protocols import dumps, to_list

# v2 datatypes accepted for each MLflow column type.
_V2_ACCEPTS = {
    "double": {
        "FP64",
        "FP32",
        "FP16",
        "INT64",
        "INT32",
        "INT16",
        "INT8",
        "UINT64",
        "UINT32",
        "UINT16",
        "UINT8",
    },
    "float": {
        "FP64",
        "FP32",
        "FP16",
        "INT64",
        "INT32",
        "INT16",
        "INT8",
        "UINT32",
        "UINT16",
        "UINT8",
    },
    "long": {"INT64", "INT32", "INT16", "INT8", "UINT32", "UINT16", "UINT8"},
    "integer": {"INT32", "INT16", "INT8", "UINT16", "UINT8"},
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "datetime": {"BYTES"},
    "binary": {"BYTES"},
}
V2_FOR_TYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime": "BYTES",
    "binary": "BYTES",
}
_MAX_RANK = 8


# ------------------------------------------------------------------------------------- v2
#: Request parameters the v2 decoder understands (others are accepted and ignored, as the
#: protocol allows): Triton's binary output switch and MLServer's content type.
BINARY_OUTPUT = "binary_data_output"
_V2_KEYS = ("id", "inputs", "outputs", "parameters", "model_name", "model_version")


@dataclass(frozen=True)
class Tensor:
    """One input tensor: its flat elements (a list of JSON values, or an array read raw)."""

    name: str
    shape: list[int]
    datatype: str
    values: list[Any] | npt.NDArray[Any]


@dataclass(frozen=True)
class V2Request:
    """A decoded v2 inference request."""

    batch: schema.Batch
    request_id: str | None
    #: answer with the binary tensor data extension (Triton's ``binary_data`` parameters)
    binary_output: bool = False
    #: the body's ``model_name`` / ``model_version`` (the kserve SDK sends them), if any
    model_name: str | None = None
    model_version: str | None = None


def v2_request(
    payload: Any, sig: schema.Signature, *, binary: memoryview | None = None
) -> V2Request:
    """Decode a v2 inference request (JSON, or the JSON header of a binary one whose tensor
    bytes are ``binary``)."""
    if not isinstance(payload, dict):
        raise problems.BadRequest(
            f"The v2 request must be a JSON object with 'inputs', not {schema._json_kind(payload)}."
        )
    unknown = sorted(k for k in payload if k not in _V2_KEYS)
    if unknown:
        raise problems.BadRequest(
            f"The v2 request has unknown key(s) {schema._names(unknown, limit=8)}; it takes "
            "'id', 'inputs', 'outputs' and 'parameters' (and 'model_name', 'model_version')."
        )
    for key in ("id", "model_name", "model_version"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise problems.BadRequest(f"{key!r} must be a string.")
    request_id = payload.get("id")
    params = payload.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise problems.BadRequest("'parameters' must be an object.")
    binary_output = _flag(params or {}, BINARY_OUTPUT, where="parameters")
    _content_type(params or {}, where="parameters")
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict)
            and isinstance(o.get("name"), str)
            and isinstance(o.get("parameters", {}), dict)
            for o in outputs
        ):
            raise problems.BadRequest(
                "'outputs' must be a list of objects with a 'name' (and optional 'parameters' object)."
            )
        check_outputs([o["name"] for o in outputs])
        for o in outputs:
            o_params = o.get("parameters") or {}
            if o_params.get("classification"):
                raise problems.Unprocessable(
                    "Output parameter 'classification' is not supported; ask for 'predict' "
                    "without it."
                )
            if "binary_data" in o_params:
                binary_output = _flag(o_params, "binary_data", where=f"output {o['name']!r}")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise problems.BadRequest("'inputs' must be a non-empty list of tensors.")
    cursor = _Cursor(binary)
    tensors = [_tensor(t, i, cursor) for i, t in enumerate(inputs)]
    cursor.finish()
    return V2Request(
        v2_batch(tensors, sig),
        request_id,
        binary_output,
        model_name=payload.get("model_name"),
        model_version=payload.get("model_version"),
    )


def check_outputs(names: list[str]) -> None:
    """Unprocessable when an output other than ``predict`` is asked for."""
    wrong = [n for n in names if n != "predict"]
    if wrong:
        raise problems.Unprocessable(
            f"The model has no output(s) {schema._names(wrong, limit=8)}; its only output is 'predict'."
        )


def _flag(params: dict[str, Any], key: str, *, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise problems.BadRequest(f"{where}.{key} must be true or false.")
    return value


def _content_type(params: dict[str, Any], *, where: str) -> None:
    """MLServer's ``content_type``: ``pd`` (one tensor per column), ``np`` or ``str``."""
    value = params.get("content_type")
    if value is not None and value not in ("pd", "np", "str"):
        raise problems.Unprocessable(
            f"{where}.content_type {problems.shown(value)} is not supported; use 'pd' (one "
            "tensor per column), 'np' or 'str', or leave it out."
        )


class _Cursor:
    """Hands out each input's slice of the binary data, in order, within bounds."""

    def __init__(self, binary: memoryview | None) -> None:
        self.binary = binary
        self.offset = 0

    def take(self, size: Any, *, i: int) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise problems.BadRequest(
                f"inputs[{i}].parameters.binary_data_size must be a non-negative integer."
            )
        if self.binary is None:
            raise problems.BadRequest(
                f"inputs[{i}] has binary_data_size but the request has no binary data; send "
                "the JSON header's length in the Inference-Header-Content-Length header and "
                "the tensor bytes after it."
            )
        left = len(self.binary) - self.offset
        if size > left:
            raise problems.BadRequest(
                f"inputs[{i}].parameters.binary_data_size is {size}, but only {left} bytes of "
                "binary data are left after the JSON header and the inputs before it."
            )
        view = self.binary[self.offset : self.offset + size]
        self.offset += size
        return view

    def finish(self) -> None:
        if self.binary is not None and self.offset != len(self.binary):
            raise problems.BadRequest(
                f"The body has {len(self.binary)} bytes of binary data after the JSON header, "
                f"but the inputs' binary_data_size add up to {self.offset}."
            )


def v2_batch(tensors: list[Tensor], sig: schema.Signature) -> schema.Batch:
    """Validate v2 input tensors against the signature: one tensor per column, or one 2-D
    tensor ``[rows, columns]`` in signature order."""
    if len(tensors) == 1 and tensors[0].name not in sig.by_name:
        t = tensors[0]
        name, shape, datatype = t.name, t.shape, t.datatype
        if len(shape) != 2 or shape[1] != len(sig.names):
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} is not a column of the model, so it must be one 2-D tensor of "
                f"shape [rows, {len(sig.names)}] in signature order ({', '.join(sig.names)}); its "
                f"shape is {problems.shown(shape)}."
            )
        if datatype not in _V2_ACCEPTS["double"]:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} has datatype {problems.shown(datatype)}; a 2-D tensor must be numeric (FP64)."
            )
        if shape[0] == 0:
            raise problems.Unprocessable("The request has no rows; send at least one row.")
        return sig.from_matrix(t.values, rows=shape[0], where=f"Tensor {problems.shown(name)}")
    columns: dict[str, Any] = {}
    for t in tensors:
        name, shape, datatype = t.name, t.shape, t.datatype
        col = sig.by_name.get(name)
        if col is None:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} is not a column of the model; send one tensor per column "
                f"({', '.join(sig.names)}) or one 2-D FP64 tensor."
            )
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} has shape {problems.shown(shape)}; a column tensor has shape [rows] or [rows, 1]."
            )
        if datatype not in _V2_ACCEPTS[col.type]:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} has datatype {problems.shown(datatype)}, but column {problems.shown(name)} is {col.type}; "
                f"send {V2_FOR_TYPE[col.type]}."
            )
        if name in columns:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} appears twice; send each column once."
            )
        columns[name] = t.values
    return sig.from_columnar(columns, where="Tensor")


def check_shape(shape: Any, *, where: str) -> list[int]:
    """A tensor shape: a non-empty list of at most 8 non-negative integers."""
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > _MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise problems.BadRequest(
            f"{where}.shape must be a list of at most {_MAX_RANK} non-negative integers."
        )
    return shape


def _tensor(t: Any, i: int, cursor: _Cursor) -> Tensor:
    if not isinstance(t, dict):
        raise problems.BadRequest(
            f"inputs[{i}] must be a tensor object, not {schema._json_kind(t)}."
        )
    params = t.get("parameters", {})
    if not isinstance(params, dict):
        raise problems.BadRequest(f"inputs[{i}].parameters must be an object.")
    raw = "binary_data_size" in params
    required = ("name", "shape", "datatype") if raw else ("name", "shape", "datatype", "data")
    missing = [k for k in required if k not in t]
    if missing:
        raise problems.BadRequest(f"inputs[{i}] lacks {', '.join(map(repr, missing))}.")
    unknown = sorted(k for k in t if k not in ("name", "shape", "datatype", "data", "parameters"))
    if unknown:
        raise problems.BadRequest(
            f"inputs[{i}] has unknown key(s) {schema._names(unknown, limit=8)}."
        )
    name, datatype = t["name"], t["datatype"]
    if not isinstance(name, str):
        raise problems.BadRequest(f"inputs[{i}].name must be a string.")
    shape = check_shape(t["shape"], where=f"inputs[{i}]")
    if not isinstance(datatype, str):
        raise problems.BadRequest(f"inputs[{i}].datatype must be a string such as FP64.")
    _content_type(params, where=f"inputs[{i}].parameters")
    datatype = datatype.upper()
    if raw:
        if "data" in t:
            raise problems.BadRequest(
                f"inputs[{i}] has both 'data' and parameters.binary_data_size; send the "
                "values one way."
            )
        view = cursor.take(params["binary_data_size"], i=i)
        return Tensor(name, shape, datatype, tensors.decode(view, datatype=datatype, shape=shape, name=name))
    data = t["data"]
    if not isinstance(data, list):
        raise problems.BadRequest(f"inputs[{i}].data must be a list.")
    return Tensor(name, shape, datatype, _flatten(data, shape, name=name))


def _flatten(data: list[Any], shape: list[int], *, name: str) -> list[Any]:
    expected = math.prod(shape)
    if not any(isinstance(v, list) for v in data):
        if len(data) != expected:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} has {len(data)} values but its shape {problems.shown(shape)} needs {expected}."
            )
        return data
    out: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(node, list):
                raise problems.Unprocessable(
                    f"Tensor {problems.shown(name)} data is nested deeper than its shape {problems.shown(shape)}."
                )
            out.append(node)
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            raise problems.Unprocessable(
                f"Tensor {problems.shown(name)} data does not match its shape {problems.shown(shape)}."
            )
        for child in node:
            walk(child, depth + 1)

    walk(data, 0)
    return out


def v2_response(
    predictions: npt.NDArray[Any],
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    binary: bool = False,
) -> tuple[bytes, int | None]:
    """The response body, and with ``binary`` the JSON header's length (the output's
    elements follow the header raw, as the binary tensor data extension says)."""
    output: dict[str, Any] = {"name": "predict", "shape": list(predictions.shape)}
    raw = b""
    if binary:
        output["datatype"], raw = tensors.encode(predictions.reshape(-1))
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["datatype"] = v2_datatype(predictions)
        output["data"] = to_list(predictions.reshape(-1))
    header = dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id if request_id is not None else uuid.uuid4().hex,
            "outputs": [output],
        }
    )
    if not binary:
        return header, None
    return header + raw, len(header)


def v2_datatype(arr: npt.NDArray[Any]) -> str:
    kind = arr.dtype.kind
    if kind == "f":
        return "FP32" if arr.dtype == np.float32 else "FP64"
    if kind in "iu":
        return "INT64"
    if kind == "b":
        return "BOOL"
    return "BYTES"
