"""Where each column lives in the flat counter arrays of `LiveStats`.

A baseline's columns (then its prediction) get consecutive slots: numeric ``2K+2`` counts
(``2K+1`` fine codes and missing) and ``K+1`` bin sums; categorical ``C+2`` counts (the
categories, other, missing). `layout_fingerprint` names a layout, so that counters laid on
different baselines are never combined.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from mlgitops.core.stats.baseline import Baseline, ColumnKind, FloatArray, IntArray

PREDICTION = "prediction"


def numeric_categories(categories: tuple[str, ...]) -> tuple[FloatArray, IntArray]:
    """Sorted numeric values of the labels and their category indices, if every label is a number
    written the way `to_labels` writes numbers; else empty arrays."""
    values = []
    for label in categories:
        try:
            v = float(label)
        except ValueError:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        if not math.isfinite(v):
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        canon = str(int(v)) if v.is_integer() and abs(v) < 2**53 else str(np.float64(v))
        if canon != label:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        values.append(v)
    order = np.argsort(values, kind="stable")
    return np.asarray(values, dtype=np.float64)[order], order.astype(np.int64)




class Codes(dict[str, int]):
    """Category label -> index; any other key reads -1 (so lookups can use ``__getitem__``)."""

    def __missing__(self, key: object) -> int:
        return -1


@dataclass(frozen=True)
class Slot:
    """Where one column lives in the flat counter arrays."""

    name: str
    kind: ColumnKind
    edges: FloatArray
    categories: npt.NDArray[np.str_]
    count_offset: int
    count_size: int
    """numeric: 2K+1 fine codes + 1 missing; categorical: C categories + other + missing."""
    sum_offset: int
    sum_size: int
    """numeric: K+1 side-right bins; categorical: 0."""
    cat_values: FloatArray
    """categorical with numeric labels: sorted values (numeric inputs skip the string conversion)."""
    cat_index: IntArray
    lookup: Codes
    """categorical: label -> category index."""



@dataclass(frozen=True)
class Plan:
    """Precomputed layout that lets `LiveStats.update` count all numeric features at once."""

    num_slots: npt.NDArray[np.intp]
    num_names: tuple[str, ...]
    edges: FloatArray
    """(numeric features, most edges) each feature's edges, NaN-padded."""
    edge_queries: FloatArray
    """Each row's edges, then the next float above each edge (values below that are at or
    below the edge): what `_numeric_counts` searches among a batch's sorted values."""
    fine_mask: npt.NDArray[np.bool_]
    """(numeric features, 2 * most edges + 1) which fine counts exist."""
    fine_targets: IntArray
    """Where the existing fine counts go in the flat counter array (row-major order)."""
    sum_mask: npt.NDArray[np.bool_]
    sum_targets: IntArray
    missing_codes: IntArray
    other_slots: tuple[int, ...]


def make_plan(slots: tuple[Slot, ...], *, has_prediction: bool) -> Plan:
    features = slots[:-1] if has_prediction else slots
    num = [i for i, s in enumerate(features) if s.kind == "numeric"]
    widest = max((len(slots[i].edges) for i in num), default=0)
    edges = np.full((len(num), widest), np.nan)
    for j, i in enumerate(num):
        edges[j, : len(slots[i].edges)] = slots[i].edges
    sizes = np.array([len(slots[i].edges) for i in num], dtype=np.int64).reshape(-1, 1)
    fine_mask = np.arange(2 * widest + 1)[None, :] < 2 * sizes + 1
    sum_mask = np.arange(widest + 1)[None, :] < sizes + 1
    count_offsets = np.array([slots[i].count_offset for i in num], dtype=np.int64).reshape(-1, 1)
    sum_offsets = np.array([slots[i].sum_offset for i in num], dtype=np.int64).reshape(-1, 1)
    return Plan(
        num_slots=np.asarray(num, dtype=np.intp),
        num_names=tuple(slots[i].name for i in num),
        edges=edges,
        edge_queries=np.concatenate([edges, np.nextafter(edges, np.inf)], axis=1),
        fine_mask=fine_mask,
        fine_targets=(count_offsets + np.arange(2 * widest + 1)[None, :])[fine_mask],
        sum_mask=sum_mask,
        sum_targets=(sum_offsets + np.arange(widest + 1)[None, :])[sum_mask],
        missing_codes=np.array([slots[i].count_offset + slots[i].count_size - 1 for i in num], dtype=np.int64),
        other_slots=tuple(i for i, s in enumerate(features) if s.kind != "numeric"),
    )


def layout(baseline: Baseline) -> tuple[Slot, ...]:
    cols = list(baseline.columns)
    if baseline.prediction is not None:
        cols.append(baseline.prediction)
    slots = []
    c_off = s_off = 0
    for col in cols:
        if col.kind == "numeric":
            k = len(col.edges)
            c_size, s_size = 2 * k + 2, k + 1
        else:
            c_size, s_size = len(col.categories) + 2, 0
        cat_values, cat_index = numeric_categories(col.categories)
        slots.append(
            Slot(
                name=col.name,
                kind=col.kind,
                edges=np.asarray(col.edges, dtype=np.float64),
                categories=np.asarray(col.categories, dtype=str),
                count_offset=c_off,
                count_size=c_size,
                sum_offset=s_off,
                sum_size=s_size,
                cat_values=cat_values,
                cat_index=cat_index,
                lookup=Codes({label: i for i, label in enumerate(col.categories)}),
            )
        )
        c_off += c_size
        s_off += s_size
    return tuple(slots)


def layout_from_sizes(names: list[str], kinds: list[str], sizes: list[int], n_sums: int) -> tuple[Slot, ...]:
    """Slots without edges/categories: enough to merge, subtract and unpack, not to update."""
    if not len(names) == len(kinds) == len(sizes):
        raise ValueError("live.columns, live.kinds and live.sizes must have matching lengths.")
    slots = []
    c_off = s_off = 0
    for name, kind, size in zip(names, kinds, sizes, strict=True):
        if kind not in ("numeric", "categorical") or size < 2 or (kind == "numeric" and size % 2):
            raise ValueError(f"live.kinds/live.sizes are invalid for column {name!r}.")
        s_size = size // 2 if kind == "numeric" else 0
        slots.append(
            Slot(
                name=name,
                kind=cast(ColumnKind, kind),
                edges=np.zeros(0, dtype=np.float64),
                categories=np.zeros(0, dtype=str),
                count_offset=c_off,
                count_size=size,
                sum_offset=s_off,
                sum_size=s_size,
                cat_values=np.zeros(0),
                cat_index=np.zeros(0, dtype=np.int64),
                lookup=Codes(),
            )
        )
        c_off += size
        s_off += s_size
    if s_off != n_sums:
        raise ValueError("live.sums does not match live.sizes.")
    return tuple(slots)


def layout_fingerprint(baseline: Baseline) -> str:
    """Digest of the bins and categories live statistics are laid on."""
    h = hashlib.sha256()
    cols = list(baseline.columns) + ([baseline.prediction] if baseline.prediction is not None else [])
    for col in cols:
        h.update(col.name.encode())
        h.update(col.kind.encode())
        h.update(np.asarray(col.edges, dtype=np.float64).tobytes())
        h.update("\x00".join(col.categories).encode())
        h.update(b"\x01")
    h.update(b"p" if baseline.prediction is not None else b"-")
    return h.hexdigest()[:16]
