"""Raw tensor bytes: Triton's binary tensor data extension and gRPC ``raw_*_contents``.

A raw tensor is its elements, flat, row-major, little-endian, with no padding; a BYTES
element is a 4-byte little-endian length followed by that many bytes. The same layout serves
the HTTP binary extension (the JSON header, then each tensor's bytes, the header's length in
``Inference-Header-Content-Length``, each input's size in ``parameters.binary_data_size``)
and the gRPC API's ``raw_input_contents`` / ``raw_output_contents``.

Sizes are checked against shape and datatype before anything is allocated: a fixed-size
tensor is read in place (`numpy.frombuffer`, no copy), and a BYTES tensor is walked over its
length prefixes, stopping at the first one that points past the end.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.server import problems

#: Element size and little-endian numpy dtype of each fixed-size v2 datatype.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")
_LENGTH = struct.Struct("<I")


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def decode(
    raw: bytes | memoryview, *, datatype: str, shape: list[int], name: str
) -> npt.NDArray[Any] | list[str]:
    """The flat elements of a raw tensor: an array (fixed-size types) or a list of strings."""
    count = element_count(shape)
    where = f"Tensor {problems.shown(name)}"
    if datatype == "BYTES":
        return _decode_bytes(raw, count=count, where=where, shape=shape)
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise problems.Unprocessable(
            f"{where} has datatype {problems.shown(datatype)}, which this server cannot read "
            f"as raw data; send one of {', '.join(DATATYPES)}."
        )
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise problems.BadRequest(
            f"{where} has {len(raw)} bytes of raw data, but shape {problems.shown(shape)} of "
            f"{datatype} needs {expected} ({count} x {dtype.itemsize} bytes)."
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.size and int(octets.max()) > 1:
            raise problems.BadRequest(
                f"{where} is BOOL but holds a byte other than 0 or 1; send one byte per "
                "element, 0 for false and 1 for true."
            )
    return np.frombuffer(raw, dtype=dtype)


def _decode_bytes(
    raw: bytes | memoryview, *, count: int, where: str, shape: list[int]
) -> list[str]:
    view = memoryview(raw)
    out: list[str] = []
    offset = 0
    end = len(view)
    while offset < end:
        if len(out) == count:
            raise problems.BadRequest(
                f"{where} has more BYTES elements than its shape {problems.shown(shape)} "
                f"holds ({count}); {end - offset} bytes are left over."
            )
        if offset + 4 > end:
            raise problems.BadRequest(
                f"{where}: BYTES element {len(out)} lacks its 4-byte length prefix "
                f"({end - offset} bytes left); each element is a little-endian uint32 "
                "length, then the bytes."
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise problems.BadRequest(
                f"{where}: BYTES element {len(out)} says {length} bytes, but only "
                f"{end - offset} remain in the tensor's data."
            )
        try:
            out.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise problems.Unprocessable(
                f"{where}: BYTES element {len(out)} is not UTF-8 text; the model's string "
                "columns take text."
            ) from None
        offset += length
    if len(out) != count:
        raise problems.BadRequest(
            f"{where} has {len(out)} BYTES elements, but its shape {problems.shown(shape)} "
            f"needs {count}."
        )
    return out


def encode(values: npt.NDArray[Any]) -> tuple[str, bytes]:
    """The v2 datatype and raw bytes of a flat output array."""
    kind = values.dtype.kind
    if kind == "f":
        if values.dtype == np.float32:
            return "FP32", values.astype("<f4", copy=False).tobytes()
        return "FP64", values.astype("<f8", copy=False).tobytes()
    if kind in "iu":
        return "INT64", values.astype("<i8", copy=False).tobytes()
    if kind == "b":
        return "BOOL", values.astype(np.uint8).tobytes()
    parts: list[bytes] = []
    for v in values.tolist():
        data = v if isinstance(v, bytes) else str(v).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return "BYTES", b"".join(parts)


def header_length(value: str | None, *, body_size: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value, checked against the body's size."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19:
        raise problems.BadRequest(
            f"Inference-Header-Content-Length is {problems.shown(value)}; it must be the "
            "byte length of the JSON header at the start of the body."
        )
    length = int(text)
    if length == 0 or length > body_size:
        raise problems.BadRequest(
            f"Inference-Header-Content-Length says {length} bytes, but the body has "
            f"{body_size}; it must be the byte length of the JSON header at the start of "
            "the body."
        )
    return length
