"""The model's MLflow signature as a validator: request values -> typed column arrays.

Every decoder returns a `Batch` of numpy columns in the signature's types, or raises
`problems.Unprocessable` naming the column (and row) that is wrong: a missing or extra
column, a value of the wrong type (a string where a double is expected, ``true`` in a
numeric column), infinity, a number out of the column type's range, rows of different
lengths, or no rows at all.

Missing values: a *nullable* column (the signature marks it ``"required": false``, or the
reference data had missing values there) takes ``null`` and ``NaN`` (and an empty CSV cell):
a floating-point or integer column gets NaN (an integer column then becomes float64, as
pandas makes it), a string or boolean column ``None``, as scikit-learn's imputers expect.
Any other column's ``null`` or ``NaN`` is refused with a sentence.

When every column is a floating-point one, a batch also carries the rows as one float64
matrix in signature order, so the predictor and the batcher never rebuild it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.adapters import mlflow_models
from mlgitops.server import problems

Array = npt.NDArray[Any]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT_RANGE = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_DTYPE = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
}
_FLOATING = frozenset({"double", "float"})
_WHAT = {
    "double": "a number",
    "float": "a number",
    "long": "an integer",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "a string",
    "binary": "a string",
}


class Batch:
    """Validated rows: one typed array per signature column (same length), maybe a matrix.

    A batch of an all-double signature carries the float64 ``matrix`` (rows x columns, in
    signature order) and builds the per-column views only when asked (most batches are
    merged with others first, so their own views would be wasted work).
    """

    __slots__ = ("_columns", "_names", "matrix", "rows")

    def __init__(
        self,
        *,
        rows: int,
        columns: Mapping[str, Array] | None = None,
        matrix: npt.NDArray[np.float64] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if columns is None and (matrix is None or names is None):
            raise ValueError("a batch needs its columns, or a matrix and the column names")
        self.rows = rows
        self.matrix = matrix
        self._columns = columns
        self._names = tuple(names) if names is not None else tuple(columns or ())

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def columns(self) -> Mapping[str, Array]:
        if self._columns is None:
            assert self.matrix is not None
            self._columns = {n: self.matrix[:, j] for j, n in enumerate(self._names)}
        return self._columns

    def __repr__(self) -> str:
        return f"Batch(rows={self.rows}, columns={list(self._names)})"


class Signature:
    """Column names and MLflow types of a model, with decoders for every request format."""

    def __init__(
        self, columns: Sequence[mlflow_models.Column], *, missing_ok: Iterable[str] = ()
    ) -> None:
        """``missing_ok``: columns that take missing values besides the signature's optional
        ones (those the reference data had missing values in)."""
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        self.by_name = {c.name: c for c in columns}
        self.index = {c.name: i for i, c in enumerate(columns)}
        #: Every column is a double: requests become one float64 matrix.
        self.all_floating = bool(columns) and all(c.type == "double" for c in columns)
        self.all_numeric = all(c.numeric for c in columns)
        self._required = frozenset(c.name for c in columns if c.required)
        extra = set(missing_ok)
        #: Columns that take missing values (null, NaN, an empty CSV cell).
        self.nullable = frozenset(
            c.name for c in columns if not c.required or c.name in extra
        )
        self._null_mask = np.array([n in self.nullable for n in self.names], dtype=bool)

    # ---------------------------------------------------------------- column-level checks
    def check_names(self, names: Sequence[str], *, where: str) -> None:
        """Raise Unprocessable when ``names`` lacks a required column or has an unknown one."""
        given = set(names)
        if len(given) != len(names):
            dup = sorted(n for n, k in collections.Counter(names).items() if k > 1)
            raise problems.Unprocessable(f"{where} repeats column(s) {_names(dup)}.")
        missing = [n for n in self.names if n in self._required and n not in given]
        extra = sorted(n for n in given if n not in self.by_name)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks column(s) {_names(missing)}")
            if extra:
                parts.append(f"has column(s) {_names(extra)} the model does not take")
            raise problems.Unprocessable(
                f"{where} {' and '.join(parts)}; the signature's columns are {_names(self.names)}."
            )

    def coerce(self, name: str, values: Any, *, where: str = "column") -> Array:
        """Typed, validated 1-D array for column ``name`` from a list of JSON values."""
        col = self.by_name[name]
        nullable = name in self.nullable
        if isinstance(values, np.ndarray):
            if values.size == 0:
                raise problems.Unprocessable("The request has no rows; send at least one row.")
            return _coerce_array(col, values, where=where, nullable=nullable)
        if not isinstance(values, list):
            raise problems.Unprocessable(
                f"{where} {name!r} must be a list of values, not {_json_kind(values)}."
            )
        if not values:
            raise problems.Unprocessable("The request has no rows; send at least one row.")
        if nullable:
            return _coerce_nullable(col, values, where=where)
        return _coerce(col, values, where=where)

    def _fill_optional(self, columns: dict[str, Array], rows: int) -> None:
        for col in self.columns:
            if col.name not in columns:
                if col.type in _FLOATING:
                    columns[col.name] = np.full(rows, np.nan, dtype=_DTYPE[col.type])
                else:
                    columns[col.name] = np.full(rows, None, dtype=object)

    def _finish(self, columns: dict[str, Array]) -> Batch:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
            raise problems.Unprocessable(f"The columns have different numbers of rows ({sizes}).")
        rows = lengths.pop()
        if rows == 0:
            raise problems.Unprocessable("The request has no rows; send at least one row.")
        self._fill_optional(columns, rows)
        ordered = {n: columns[n] for n in self.names}
        matrix = None
        if self.all_floating and all(c.dtype == np.float64 for c in ordered.values()):
            matrix = np.column_stack(list(ordered.values())) if ordered else None
        return Batch(rows=rows, columns=ordered, matrix=matrix)

    # ---------------------------------------------------------------------- decoders
    def from_columnar(self, data: Mapping[str, Any], *, where: str) -> Batch:
        """``{"col": [v, ...], ...}``; a scalar per column is one row."""
        self.check_names(list(data), where=where)
        columns: dict[str, Array] = {}
        for name, values in data.items():
            seq = values if isinstance(values, (list, np.ndarray)) else [values]
            columns[name] = self.coerce(name, seq, where=f"{where} column")
        return self._finish(columns)

    def from_records(self, records: Any, *, where: str) -> Batch:
        """``[{"col": v, ...}, ...]``."""
        if not isinstance(records, list) or not records:
            raise problems.Unprocessable(f"{where} must be a non-empty list of row objects.")
        first = records[0]
        if not isinstance(first, dict):
            raise problems.Unprocessable(
                f"{where} must be a list of row objects; row 0 is {_json_kind(first)}."
            )
        keys = list(first)
        self.check_names(keys, where=f"{where} row 0")
        keyset = set(keys)
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise problems.Unprocessable(
                    f"{where} must be a list of row objects; row {i} is {_json_kind(rec)}."
                )
            if rec.keys() != keyset:
                self.check_names(list(rec), where=f"{where} row {i}")
                raise problems.Unprocessable(
                    f"{where} row {i} has different columns than row 0; send the same columns in every row."
                )
        if self.all_floating and len(keys) == len(self.names):
            rows = [[rec[n] for n in self.names] for rec in records]
            return self._from_matrix_rows(rows, where=where)
        columns = {
            k: self.coerce(k, [rec[k] for rec in records], where=f"{where} column") for k in keys
        }
        return self._finish(columns)

    def from_rows(self, rows: Any, *, where: str, names: Sequence[str] | None = None) -> Batch:
        """``[[v, ...], ...]``: positional rows, in ``names`` order (default: the signature's)."""
        order = tuple(names) if names is not None else self.names
        if names is not None:
            self.check_names(list(order), where=f"{where.split('.')[0]}.columns")
        if not isinstance(rows, list) or not rows:
            raise problems.Unprocessable(f"{where} must be a non-empty list of rows.")
        width = len(order)
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise problems.Unprocessable(
                    f"{where} row {i} must be a list of {width} values, not {_json_kind(row)}."
                )
            if len(row) != width:
                raise problems.Unprocessable(
                    f"{where} row {i} has {len(row)} values; the model takes {width} "
                    f"({_names(order)})."
                )
        if self.all_floating and order == self.names:
            return self._from_matrix_rows(rows, where=where)
        columns = {
            name: self.coerce(name, [row[j] for row in rows], where=f"{where} column")
            for j, name in enumerate(order)
        }
        return self._finish(columns)

    def from_matrix(
        self, flat: list[Any] | npt.NDArray[Any], *, rows: int, where: str
    ) -> Batch:
        """A row-major flat list (or array, read raw) of ``rows x len(columns)`` numbers in
        signature order."""
        if not self.all_numeric:
            raise problems.Unprocessable(
                f"{where}: a single 2-D tensor needs an all-numeric signature; this model has "
                f"non-numeric columns, so send one named tensor per column."
            )
        width = len(self.names)
        if isinstance(flat, np.ndarray) and self.all_floating and flat.dtype.kind in "fiu":
            matrix = flat.astype(np.float64).reshape(rows, width)
            if _finite_enough(matrix, self._null_mask):
                return self._matrix_batch(matrix)
        if self.all_floating:  # a list, or an array with a bad value: the sentence names it
            values: list[Any] = flat.tolist() if isinstance(flat, np.ndarray) else flat
            matrix = _float_matrix(values, where=where, names=self.names, nullable=self._null_mask)
            return self._matrix_batch(matrix.reshape(rows, width))
        columns = {
            name: self.coerce(name, flat[j::width], where=f"{where} column")
            for j, name in enumerate(self.names)
        }
        return self._finish(columns)

    def _from_matrix_rows(self, rows: list[list[Any]], *, where: str) -> Batch:
        flat = [v for row in rows for v in row]
        matrix = _float_matrix(flat, where=where, names=self.names, nullable=self._null_mask)
        return self._matrix_batch(matrix.reshape(len(rows), len(self.names)))

    def _matrix_batch(self, matrix: npt.NDArray[np.float64]) -> Batch:
        return Batch(rows=matrix.shape[0], matrix=matrix, names=self.names)


# ------------------------------------------------------------------------------------ helpers
def _names(names: Sequence[str], limit: int = 20) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(problems.shown(n) for n in list(names)[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bad_value(
    col: mlflow_models.Column, values: list[Any], *, where: str, nullable: bool = False
) -> problems.Unprocessable:
    """The sentence for the first value of ``values`` that does not fit ``col``."""
    for i, v in enumerate(values):
        problem = _value_problem(col.type, v, nullable=nullable)
        if problem:
            return problems.Unprocessable(
                f"{where} {col.name!r} row {i} is {problem}; the signature says {col.type}, "
                f"so send {_WHAT.get(col.type, 'a value')}."
            )
    return problems.Unprocessable(
        f"{where} {col.name!r} holds values that do not fit its {col.type} type."
    )


_REQUIRED = (
    "{what} (a missing value), but the column is required (the signature does not mark it "
    "optional and the reference data had no missing values there)"
)


def _value_problem(kind: str, v: Any, *, nullable: bool = False) -> str | None:
    if _is_missing(v):
        if nullable:
            return None
        return _REQUIRED.format(what="null" if v is None else "NaN")
    if kind in _FLOATING:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return _json_kind(v)
        f = float(v) if not isinstance(v, int) or abs(v) < 2**1023 else math.inf
        if not math.isfinite(f):
            return "infinite (the signature allows only finite numbers, or NaN for a missing value)"
        if kind == "float" and abs(f) > _FLOAT32_MAX:
            return f"{v!r}, beyond the float32 range"
        return None
    if kind in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float):
                return f"the non-integer number {v!r}"
            return _json_kind(v)
        lo, hi = _INT_RANGE[kind]
        if not lo <= v <= hi:
            return f"{problems.shown(v)}, outside the {kind} range"
        return None
    if kind == "boolean":
        return None if isinstance(v, bool) else _json_kind(v)
    return None if isinstance(v, str) else _json_kind(v)


def _has_bool(values: list[Any]) -> bool:
    return any(v is True or v is False for v in values)


def _coerce(col: mlflow_models.Column, values: list[Any], *, where: str) -> Array:
    kind = col.type
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise _bad_value(col, values, where=where) from None
    if raw.ndim != 1:
        raise problems.Unprocessable(
            f"{where} {col.name!r} must hold one scalar per row, not nested lists."
        )
    dk = raw.dtype.kind
    if kind in _FLOATING:
        if dk not in "fi" or _has_bool(values):
            raise _bad_value(col, values, where=where)
        out = raw.astype(np.float64)
        if not np.isfinite(out).all():
            raise _bad_value(col, values, where=where)
        if kind == "float":
            if (np.abs(out) > _FLOAT32_MAX).any():
                raise _bad_value(col, values, where=where)
            return out.astype(np.float32)
        return out
    if kind in _INT_RANGE:
        if dk != "i" or _has_bool(values):
            raise _bad_value(col, values, where=where)
        lo, hi = _INT_RANGE[kind]
        if kind == "integer" and ((raw < lo).any() or (raw > hi).any()):
            raise _bad_value(col, values, where=where)
        return raw.astype(_DTYPE[kind])
    if kind == "boolean":
        if dk != "b":
            raise _bad_value(col, values, where=where)
        return raw
    # string (and datetime/binary as strings)
    if dk != "U":
        raise _bad_value(col, values, where=where)
    return raw.astype(object)


def _coerce_array(
    col: mlflow_models.Column, values: Array, *, where: str, nullable: bool = False
) -> Array:
    """`_coerce` for an array read raw: numbers into a floating column without a detour
    through Python objects; anything else through the list path (the same checks)."""
    if values.ndim != 1:
        values = values.reshape(-1)
    if col.type in _FLOATING and values.dtype.kind in "fiu":
        out = values.astype(np.float64)
        if _finite_enough(out, nullable) and (
            col.type == "double" or not (np.abs(out) > _FLOAT32_MAX).any()
        ):
            return out if col.type == "double" else out.astype(np.float32)
    if nullable:
        return _coerce_nullable(col, values.tolist(), where=where)
    return _coerce(col, values.tolist(), where=where)


def _is_missing(v: Any) -> bool:
    """A JSON null, or a NaN (a float that is not equal to itself)."""
    return v is None or (isinstance(v, float) and v != v)


def _finite_enough(values: Array, nullable: bool | npt.NDArray[np.bool_]) -> bool:
    """Every value finite, or NaN where missing values are allowed (``nullable``: one flag,
    or one per column of a 2-D ``values``)."""
    finite = np.isfinite(values)
    if finite.all():
        return True
    if not np.any(nullable):
        return False
    return bool((finite | (np.isnan(values) & nullable)).all())


def _coerce_nullable(col: mlflow_models.Column, values: list[Any], *, where: str) -> Array:
    """`_coerce` for a column that takes missing values: NaN for numbers (an integer column
    with missing values becomes float64, as in pandas), None for strings and booleans."""
    missing = [_is_missing(v) for v in values]
    if not any(missing):
        return _coerce(col, values, where=where)
    present = [v for v, m in zip(values, missing, strict=True) if not m]
    try:
        typed = _coerce(col, present, where=where) if present else None
    except problems.Unprocessable:  # the sentence names the row of the whole column
        raise _bad_value(col, values, where=where, nullable=True) from None
    mask = np.asarray(missing)
    if col.type in _FLOATING or col.type in _INT_RANGE:
        dtype = np.float32 if col.type == "float" else np.float64
        out: Array = np.full(len(values), np.nan, dtype=dtype)
    else:
        out = np.full(len(values), None, dtype=object)
    if typed is not None:
        out[~mask] = typed
    return out


def _float_matrix(
    flat: list[Any],
    *,
    where: str,
    names: Sequence[str] | None = None,
    nullable: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float64]:
    """float64 array from a flat list of JSON numbers (row-major over ``names``; ``nullable``
    marks the columns where null and NaN are missing values); Unprocessable names the bad
    value."""
    width = len(names) if names else 1
    some_nullable = nullable is not None and bool(nullable.any())
    try:
        raw = np.asarray(flat)
        if some_nullable and raw.dtype.kind == "O":  # nulls: NaN (checked by column below)
            raw = np.asarray([math.nan if v is None else v for v in flat])
    except (ValueError, TypeError, OverflowError):
        raw = np.asarray([None])
    ok = raw.ndim == 1 and raw.dtype.kind in "fi" and not _has_bool(flat)
    if ok:
        out = raw.astype(np.float64)
        if some_nullable and out.size % width == 0:
            assert nullable is not None
            ok = _finite_enough(out.reshape(-1, width), nullable)
        else:
            ok = bool(np.isfinite(out).all())
        if ok:
            result: npt.NDArray[np.float64] = out
            return result
    for i, v in enumerate(flat):
        j = i % width
        problem = _value_problem(
            "double", v, nullable=bool(nullable is not None and nullable[j])
        )
        if problem:
            row = i // width
            label = f"column {names[j]!r} row {row}" if names else f"value {i}"
            raise problems.Unprocessable(
                f"{where} {label} is {problem}; the signature takes numbers there."
            )
    raise problems.Unprocessable(f"{where} holds values that are not finite numbers.")
