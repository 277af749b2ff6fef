"""MLflow scoring wire format (``POST /invocations``): JSON and CSV in, predictions out.

``application/json``, exactly one of:
``{"dataframe_split": {"columns": [...], "data": [[...]]}}``,
``{"dataframe_records": [{...}, ...]}``, ``{"instances": ...}`` or ``{"inputs": ...}``
(instances/inputs: a list of row objects, a list of positional rows in signature order, or
an object of columns); an optional ``"params"`` object is accepted and ignored.
``text/csv``: a header row naming the columns, then one line per row.
Response: ``{"predictions": [...]}``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy.typing as npt

from mlgitops.server import problems, schema
from mlgitops.server.protocols import dumps, to_list

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def mlflow_json(payload: Any, sig: schema.Signature) -> schema.Batch:
    """Decode an MLflow JSON scoring request."""
    if not isinstance(payload, dict):
        raise problems.BadRequest(
            "The JSON body must be an object with one of the keys "
            f"{', '.join(MLFLOW_FORMATS)}; got {schema._json_kind(payload)}."
        )
    present = [k for k in MLFLOW_FORMATS if k in payload]
    unknown = sorted(k for k in payload if k not in MLFLOW_FORMATS and k != "params")
    if len(present) != 1 or unknown:
        got = schema._names(list(payload), limit=8) if payload else "no keys"
        raise problems.BadRequest(
            f"The JSON body must have exactly one of the keys {', '.join(MLFLOW_FORMATS)} "
            f"(and optionally 'params'); it has {got}."
        )
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise problems.BadRequest("'params' must be an object.")
    key = present[0]
    value = payload[key]
    if key == "dataframe_split":
        return _split(value, sig)
    if key == "dataframe_records":
        return sig.from_records(value, where="dataframe_records")
    return _instances(value, sig, where=key)


def _split(value: Any, sig: schema.Signature) -> schema.Batch:
    where = "dataframe_split"
    if not isinstance(value, dict):
        raise problems.BadRequest(
            f"{where} must be an object with 'columns' and 'data', not {schema._json_kind(value)}."
        )
    unknown = sorted(k for k in value if k not in ("columns", "data", "index"))
    if unknown:
        raise problems.BadRequest(
            f"{where} has unknown key(s) {schema._names(unknown, limit=8)}; use 'columns', 'data' "
            "and optionally 'index'."
        )
    if "data" not in value:
        raise problems.BadRequest(f"{where} lacks 'data' (a list of rows).")
    columns = value.get("columns")
    if columns is not None and (
        not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
    ):
        raise problems.Unprocessable(f"{where}.columns must be a list of column names.")
    data = value["data"]
    index = value.get("index")
    if index is not None and not isinstance(index, list):
        raise problems.BadRequest(f"{where}.index must be a list (one label per row).")
    if isinstance(index, list) and isinstance(data, list) and len(index) != len(data):
        raise problems.Unprocessable(
            f"{where}.index has {len(index)} labels but data has {len(data)} rows."
        )
    if (
        isinstance(data, list)
        and data
        and not isinstance(data[0], list)
        and columns
        and len(columns) == 1
    ):
        data = [[v] for v in data]
    return sig.from_rows(data, where=f"{where}.data", names=columns)


def _instances(value: Any, sig: schema.Signature, *, where: str) -> schema.Batch:
    if isinstance(value, dict):
        return sig.from_columnar(value, where=where)
    if isinstance(value, list) and value:
        if isinstance(value[0], dict):
            return sig.from_records(value, where=where)
        if isinstance(value[0], list):
            return sig.from_rows(value, where=where)
        if len(sig.names) == 1:
            return sig.from_rows([[v] for v in value], where=where)
        raise problems.Unprocessable(
            f"{where} must be a list of row objects, a list of rows (lists of "
            f"{len(sig.names)} values in signature order) or an object of columns."
        )
    raise problems.Unprocessable(
        f"{where} must be a non-empty list of rows or an object of columns, not "
        f"{schema._json_kind(value) if value != [] else 'an empty list'}."
    )


def mlflow_csv(body: bytes, sig: schema.Signature) -> schema.Batch:
    """Decode ``text/csv``: a header row of column names, then values."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise problems.BadRequest("The CSV body is not UTF-8 text.") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise problems.BadRequest(f"The CSV body cannot be parsed ({exc}).") from None
    rows = [r for r in rows if r]
    if not rows:
        raise problems.BadRequest("The CSV body is empty; send a header row and data rows.")
    header = [h.strip() for h in rows[0]]
    sig.check_names(header, where="The CSV header")
    body_rows = rows[1:]
    if not body_rows:
        raise problems.Unprocessable(
            "The CSV body has a header but no rows; send at least one row."
        )
    for i, r in enumerate(body_rows):
        if len(r) != len(header):
            raise problems.Unprocessable(
                f"CSV row {i} has {len(r)} fields; the header names {len(header)} columns."
            )
    columns: dict[str, Any] = {}
    for j, name in enumerate(header):
        kind = sig.by_name[name].type
        nullable = name in sig.nullable
        columns[name] = [
            _csv_value(r[j], kind, name=name, row=i, nullable=nullable)
            for i, r in enumerate(body_rows)
        ]
    return sig.from_columnar(columns, where="CSV")


def _csv_value(text: str, kind: str, *, name: str, row: int, nullable: bool = False) -> Any:
    """One CSV cell as ``kind``; an empty cell is a missing value (None) where the column
    takes them (as pandas reads it), a sentence in any other typed column."""
    s = text.strip()
    if not s and (nullable or kind not in ("string", "datetime", "binary")):
        if nullable:
            return None
        raise problems.Unprocessable(
            f"CSV column {name!r} row {row} is empty (a missing value), but the column is "
            f"required (the signature does not mark it optional); send {kind} there."
        )
    if kind in ("double", "float"):
        try:
            return float(s)
        except ValueError:
            raise problems.Unprocessable(
                f"CSV column {name!r} row {row} is {problems.shown(text)}, not a number; the signature says {kind}."
            ) from None
    if kind in ("long", "integer"):
        try:
            return int(s)
        except ValueError:
            raise problems.Unprocessable(
                f"CSV column {name!r} row {row} is {problems.shown(text)}, not an integer; the signature says {kind}."
            ) from None
    if kind == "boolean":
        low = s.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise problems.Unprocessable(
            f"CSV column {name!r} row {row} is {problems.shown(text)}, not true/false; the signature says boolean."
        )
    return text


def mlflow_response(predictions: npt.NDArray[Any]) -> bytes:
    return dumps({"predictions": to_list(predictions)})
