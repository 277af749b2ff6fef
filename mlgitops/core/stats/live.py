"""The live-statistics engine: mergeable, subtractable counters on a baseline's bins.

`LiveStats` count rows on the baseline's edges and categories (the layout of `layout`):
they merge across workers and replicas, subtract to give the window since a cursor, and
take memory independent of the number of rows.

Pure: numpy and the standard library only; no I/O, clock or environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlgitops.core import ecdf
from mlgitops.core.stats.baseline import (
    SCHEMA_VERSION,
    Baseline,
    ColumnKind,
    FloatArray,
    IntArray,
    read_field,
    read_list,
    to_labels,
)
from mlgitops.core.stats.layout import (
    PREDICTION,
    Plan,
    Slot,
    layout,
    layout_fingerprint,
    layout_from_sizes,
    make_plan,
)


@dataclass(frozen=True)
class ColumnCounts:
    """Live counters of one column, unpacked for drift measures."""

    name: str
    kind: ColumnKind
    counts: IntArray
    """numeric: 2K+1 fine counts (even: between edges, odd: at edge); categorical: per category."""
    sums: FloatArray
    """numeric: sums per side-right bin; categorical: empty."""
    other: int
    """categorical: values outside the baseline's categories; numeric: 0."""
    missing: int
    sumsq: float

    @property
    def count(self) -> int:
        """Non-missing values."""
        return int(self.counts.sum()) + self.other

    @property
    def bin_counts(self) -> IntArray:
        """numeric: counts on side-right bins ``[e_{i-1}, e_i)`` (len(edges)+1 entries)."""
        fine = self.counts
        out = fine[0::2].copy()
        out[1:] += fine[1::2]
        return out


class LiveStats:
    """Mergeable, subtractable counters on a baseline's edges and categories."""

    __slots__ = ("_counts", "_fingerprint", "_has_pred", "_plan", "_rows", "_slots", "_sums", "_sumsq")

    def __init__(
        self,
        *,
        slots: tuple[Slot, ...],
        has_prediction: bool,
        plan: Plan | None,
        fingerprint: str,
        counts: IntArray,
        sums: FloatArray,
        sumsq: FloatArray,
        rows: int,
    ) -> None:
        self._slots = slots
        self._has_pred = has_prediction
        self._plan = plan
        self._fingerprint = fingerprint
        self._counts = counts
        self._sums = sums
        self._sumsq = sumsq
        self._rows = rows

    @classmethod
    def empty(cls, baseline: Baseline) -> LiveStats:
        """Zero counters laid on `baseline`."""
        slots = layout(baseline)
        n_counts = sum(s.count_size for s in slots)
        n_sums = sum(s.sum_size for s in slots)
        return cls(
            slots=slots,
            has_prediction=baseline.prediction is not None,
            plan=make_plan(slots, has_prediction=baseline.prediction is not None),
            fingerprint=layout_fingerprint(baseline),
            counts=np.zeros(n_counts, dtype=np.int64),
            sums=np.zeros(n_sums, dtype=np.float64),
            sumsq=np.zeros(len(slots), dtype=np.float64),
            rows=0,
        )

    @property
    def rows(self) -> int:
        """Rows seen."""
        return self._rows

    @property
    def fingerprint(self) -> str:
        """Digest of the baseline layout these counters are laid on."""
        return self._fingerprint

    def update(self, columns: Mapping[str, npt.ArrayLike], predictions: npt.ArrayLike | None) -> None:
        """Count one batch of rows (features by name, and the model's predictions, if given).

        Numeric features are counted together on a (columns x rows) matrix (`_numeric_counts`);
        categories and the prediction by a code per value and one bincount. Nothing changes
        unless the whole batch is valid.
        """
        plan = self._plan
        if plan is None:
            raise ValueError("These live statistics were read without their baseline; pass baseline= to from_dict.")
        try:
            first = next(iter(columns.values()))
        except StopIteration:
            raise ValueError("The batch has no columns.") from None
        rows = len(np.asarray(first))
        codes: list[IntArray] = []
        sum_codes: list[IntArray] = []
        sum_weights: list[FloatArray] = []
        if len(plan.num_slots):
            try:
                m = np.array([columns[name] for name in plan.num_names], dtype=np.float64)
            except KeyError as exc:
                raise ValueError(f"The batch lacks feature {exc.args[0]!r}.") from None
            except ValueError as exc:
                raise ValueError(f"Every feature must hold one number per row ({rows}): {exc}") from None
            if m.shape != (len(plan.num_names), rows):
                raise ValueError(f"Every feature must hold one value per row ({rows}).")
            numeric = self._numeric_counts(m)
        for slot_index in plan.other_slots:
            codes.append(self._slot_codes(slot_index, self._column(columns, slot_index, rows), sum_codes, sum_weights))
        if self._has_pred and predictions is not None:
            pred = np.asarray(predictions)
            if pred.shape != (rows,):
                raise ValueError(f"predictions must hold one value per row ({rows}), not shape {pred.shape}.")
            codes.append(self._slot_codes(len(self._slots) - 1, pred, sum_codes, sum_weights))
        if len(plan.num_slots):
            fine, missing, sums, sumsq = numeric
            self._counts[plan.fine_targets] += fine
            self._counts[plan.missing_codes] += missing
            self._sums[plan.sum_targets] += sums
            self._sumsq[plan.num_slots] += sumsq
        if codes:
            self._counts += np.bincount(np.concatenate(codes), minlength=len(self._counts))
        if sum_codes:
            self._sums += np.bincount(
                np.concatenate(sum_codes), weights=np.concatenate(sum_weights), minlength=len(self._sums)
            )
        self._rows += rows

    def _numeric_counts(self, m: FloatArray) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
        """Counters of a (numeric features x rows) block, in the plan's target order.

        Each row is sorted once; every edge is then found among the sorted values
        (`ecdf.count_below`, all rows at once): the values below an edge and at or below it
        give the counts between and at the edges, and each bin's sum is the sum of a stretch
        of sorted values (`ecdf.segment_sums`). Returns fine counts, missing counts, bin sums
        and sums of squares.
        """
        plan = self._plan
        assert plan is not None
        ordered, present = ecdf.sort_rows(m, in_place=True)
        k, widest = plan.edges.shape
        found = ecdf.count_below(ordered, present, plan.edge_queries)
        below, at_or_below = found[:, :widest], found[:, widest:]
        upto = np.concatenate([below, present[:, None]], axis=1)  # padding edges count all values
        before = np.concatenate([np.zeros((k, 1), dtype=np.int64), at_or_below], axis=1)
        fine = np.empty((k, 2 * widest + 1), dtype=np.int64)
        fine[:, 0::2] = upto - before
        fine[:, 1::2] = at_or_below - below
        width = ordered.shape[1]
        starts = np.concatenate([np.zeros((k, 1), dtype=np.int64), below, present[:, None]], axis=1)
        starts += (np.arange(k, dtype=np.int64) * width)[:, None]
        sums = ecdf.segment_sums(ordered.ravel(), starts.ravel()).reshape(k, widest + 2)[:, :-1]
        finite = np.where(np.isnan(ordered), 0.0, ordered) if (present < width).any() else ordered
        sumsq = np.einsum("ij,ij->i", finite, finite)
        return fine[plan.fine_mask], width - present, sums[plan.sum_mask], sumsq

    def _column(self, columns: Mapping[str, npt.ArrayLike], slot_index: int, rows: int) -> np.ndarray[Any, Any]:
        name = self._slots[slot_index].name
        try:
            values = np.asarray(columns[name])
        except KeyError:
            raise ValueError(f"The batch lacks feature {name!r}.") from None
        if values.shape != (rows,):
            raise ValueError(f"Feature {name!r} must hold one value per row ({rows}), not shape {values.shape}.")
        return values

    def _slot_codes(
        self, slot_index: int, values: np.ndarray[Any, Any], sum_codes: list[IntArray], sum_weights: list[FloatArray]
    ) -> IntArray:
        """Counter codes of one column (numeric prediction, or categorical)."""
        slot = self._slots[slot_index]
        missing_code = slot.count_offset + slot.count_size - 1
        if slot.kind == "numeric":
            x = np.asarray(values, dtype=np.float64)
            finite = np.isfinite(x)
            if not finite.all():
                x = np.where(finite, x, 0.0)
            left = slot.edges.searchsorted(x)
            padded = np.append(slot.edges, np.nan)
            at_edge = padded[left] == x
            sum_codes.append(left + at_edge + slot.sum_offset)
            sum_weights.append(x)
            self._sumsq[slot_index] += float(np.dot(x, x))
            return np.where(finite, 2 * left + at_edge + slot.count_offset, missing_code)
        ncat = len(slot.categories)
        if ncat and len(slot.cat_values) == ncat and values.dtype.kind in "iuf":
            x = values.astype(np.float64, copy=False)
            pos = np.minimum(slot.cat_values.searchsorted(x), ncat - 1)
            code = np.where(slot.cat_values[pos] == x, slot.cat_index[pos], ncat)
            return np.where(np.isfinite(x), code + slot.count_offset, missing_code)
        if values.dtype.kind in "OU":
            # strings: a dict lookup per value (C-level map, no Python frame per value) beats
            # numpy's string machinery and sorting
            lookup = slot.lookup
            code = np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))
            unmatched = code < 0
            if not unmatched.any():
                return code + slot.count_offset
            labels, present = to_labels(values[unmatched])
            rest = np.fromiter((lookup.get(v, ncat) for v in labels.tolist()), dtype=np.int64, count=len(labels))
            code[unmatched] = np.where(present, rest, -1)
            return np.where(code >= 0, code + slot.count_offset, missing_code)
        labels, present = to_labels(values)
        if ncat:
            pos = np.minimum(slot.categories.searchsorted(labels), ncat - 1)
            code = np.where(slot.categories[pos] == labels, pos, ncat)
        else:
            code = np.zeros(len(labels), dtype=np.int64)
        return np.where(present, code + slot.count_offset, missing_code)

    def _check(self, other: LiveStats) -> None:
        if other._fingerprint != self._fingerprint:
            raise ValueError("Live statistics laid on different baselines cannot be combined.")

    def merge(self, other: LiveStats) -> LiveStats:
        """Sum of two streams (e.g. across workers or replicas)."""
        self._check(other)
        return self._derive(
            self._counts + other._counts, self._sums + other._sums, self._sumsq + other._sumsq, self._rows + other._rows
        )

    def since(self, earlier: LiveStats) -> LiveStats:
        """The window between an earlier snapshot of the same stream and now."""
        self._check(earlier)
        counts = self._counts - earlier._counts
        if earlier._rows > self._rows or (counts < 0).any():
            raise ValueError("`earlier` is not an earlier snapshot of this stream (counters would go negative).")
        return self._derive(counts, self._sums - earlier._sums, self._sumsq - earlier._sumsq, self._rows - earlier._rows)

    def copy(self) -> LiveStats:
        """An independent snapshot (e.g. a window cursor)."""
        return self._derive(self._counts.copy(), self._sums.copy(), self._sumsq.copy(), self._rows)

    def _derive(self, counts: IntArray, sums: FloatArray, sumsq: FloatArray, rows: int) -> LiveStats:
        return LiveStats(
            slots=self._slots,
            has_prediction=self._has_pred,
            plan=self._plan,
            fingerprint=self._fingerprint,
            counts=counts,
            sums=sums,
            sumsq=sumsq,
            rows=rows,
        )

    def column(self, name: str) -> ColumnCounts:
        """Counters of one feature (or ``"prediction"``)."""
        for i, slot in enumerate(self._features):
            if slot.name == name:
                return self._unpack(i)
        raise KeyError(f"The live statistics have no column {name!r}.")

    def prediction(self) -> ColumnCounts | None:
        """Counters of the prediction, if the baseline has one."""
        return self._unpack(len(self._slots) - 1) if self._has_pred else None

    @property
    def _features(self) -> tuple[Slot, ...]:
        return self._slots[:-1] if self._has_pred else self._slots

    def _unpack(self, i: int) -> ColumnCounts:
        slot = self._slots[i]
        seg = self._counts[slot.count_offset : slot.count_offset + slot.count_size]
        if slot.kind == "numeric":
            return ColumnCounts(
                name=slot.name,
                kind="numeric",
                counts=seg[:-1],
                sums=self._sums[slot.sum_offset : slot.sum_offset + slot.sum_size],
                other=0,
                missing=int(seg[-1]),
                sumsq=float(self._sumsq[i]),
            )
        return ColumnCounts(
            name=slot.name,
            kind="categorical",
            counts=seg[:-2],
            sums=np.zeros(0, dtype=np.float64),
            other=int(seg[-2]),
            missing=int(seg[-1]),
            sumsq=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready mapping (flat lists of numbers plus the layout digest)."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "layout": self._fingerprint,
            "rows": self._rows,
            "columns": [s.name for s in self._features],
            "prediction": self._has_pred,
            "kinds": [s.kind for s in self._slots],
            "sizes": [s.count_size for s in self._slots],
            "counts": self._counts.tolist(),
            "sums": self._sums.tolist(),
            "sumsq": self._sumsq.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, baseline: Baseline | None = None) -> LiveStats:
        """Parse `to_dict` output; pass `baseline` to keep updating (and to check the layout)."""
        if not isinstance(data, Mapping):
            raise ValueError("Live statistics must be a JSON object.")
        if data.get("schemaVersion") != SCHEMA_VERSION:
            raise ValueError(f"live.schemaVersion must be {SCHEMA_VERSION}.")
        layout = read_field(data, "layout", str, "live")
        rows = read_field(data, "rows", int, "live")
        names = read_list(data, "columns", (str,), "live")
        has_pred = read_field(data, "prediction", bool, "live")
        kinds = read_list(data, "kinds", (str,), "live")
        sizes = read_list(data, "sizes", (int,), "live")
        counts = np.asarray(read_list(data, "counts", (int,), "live"), dtype=np.int64)
        sums = np.asarray(read_list(data, "sums", (int, float), "live"), dtype=np.float64)
        sumsq = np.asarray(read_list(data, "sumsq", (int, float), "live"), dtype=np.float64)
        if baseline is not None:
            template = cls.empty(baseline)
            if template._fingerprint != layout:
                raise ValueError("live.layout does not match the baseline; these statistics belong to another version.")
            if template._counts.shape != counts.shape or template._sums.shape != sums.shape:
                raise ValueError("live.counts or live.sums have the wrong length for the baseline.")
            slots = template._slots
            plan = template._plan
        else:
            plan = None
            slots = layout_from_sizes(names + ([PREDICTION] if has_pred else []), kinds, sizes, len(sums))
        if sum(s.count_size for s in slots) != len(counts):
            raise ValueError("live.counts does not match live.sizes.")
        if len(sumsq) != len(slots):
            raise ValueError("live.sumsq must have one entry per column.")
        if (counts < 0).any() or rows < 0:
            raise ValueError("live.counts and live.rows must not be negative.")
        return cls(
            slots=slots,
            has_prediction=has_pred,
            plan=plan,
            fingerprint=layout,
            counts=counts,
            sums=sums,
            sumsq=sumsq,
            rows=rows,
        )

    def nbytes(self) -> int:
        """Bytes held by the counters (independent of rows)."""
        return int(self._counts.nbytes + self._sums.nbytes + self._sumsq.nbytes)
