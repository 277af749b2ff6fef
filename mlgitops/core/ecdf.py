"""Two-sample statistics of many columns at once, from one sort per matrix.

Rows of a (columns x values) matrix are columns of a data set; missing values are NaN (rows
may hold different numbers of values: NaN pads the end). `merge` sorts the reference and the
current matrix along their rows, finds where each reference value falls among the current
values with one vectorized binary search over all columns, and lays both out as one merged,
sorted row per column with a flag saying which side each value came from. From that layout:

- `ks_statistic`: the two-sample Kolmogorov-Smirnov statistic (scipy's ``ks_2samp``);
- `wasserstein`: the first Wasserstein distance (scipy's ``wasserstein_distance``), summing
  the same terms in the same order;
- `distinct`: distinct values of reference ∪ current;
- `value_counts`: per-value counts of both sides (for columns with few values).

The empirical CDFs are only read at the last value of each run of equal values; inside a run
the gap to the next value is zero, so ties need no special care.

Pure: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CHUNK_VALUES = 2_500_000
"""Merged values processed at once (bounds memory: ~50 bytes per merged value)."""


@dataclass(frozen=True)
class Merged:
    """Reference and current values of k columns, merged and sorted per row."""

    values: FloatArray
    """(k, L) sorted values; each row's padding repeats its largest value (zero gaps)."""
    is_reference: BoolArray
    """(k, L) True where the value came from the reference."""
    ref_count: IntArray
    """(k,) non-missing reference values per column."""
    cur_count: IntArray
    """(k,) non-missing current values per column."""
    ref_seen: npt.NDArray[np.signedinteger[Any]]
    """(k, L) reference values at or before each merged position."""
    ref_cdf: FloatArray
    """(k, L) reference ECDF at each merged value (right-continuous where a run of ties ends)."""
    cur_cdf: FloatArray
    """(k, L) current ECDF likewise."""
    run_end: BoolArray
    """(k, L) True at the last value of each run of equal values (padding excluded)."""


def sort_rows(values: FloatArray, *, in_place: bool = False) -> tuple[FloatArray, IntArray]:
    """Rows sorted ascending with missing values (NaN, +-inf) moved to the end as NaN; counts.

    ``in_place`` sorts `values` itself (a float64 array the caller owns) instead of a copy.
    """
    x = values if in_place else values.copy()
    # a finite sum means no NaN or infinity (one pass, no mask); an overflow takes the long way
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(values))
    if math.isfinite(total):
        counts = np.full(values.shape[0], values.shape[1], dtype=np.int64)
    else:
        finite = np.isfinite(values)
        counts = np.count_nonzero(finite, axis=1).astype(np.int64)
        x[~finite] = np.nan
    x.sort(axis=1)
    return x, counts


BLOCK = 16
"""`count_below` first finds a query's block of this many sorted values, then its place."""


ROW_SEARCH_QUERIES = 32
"""From this many queries per row on, `count_below` searches row by row (``np.searchsorted``
costs ~60 ns a query there, against ~170 ns for the all-rows search plus ~3 µs per row)."""


def count_below(sorted_rows: FloatArray, counts: IntArray, queries: FloatArray) -> IntArray:
    """For each query, how many of its row's values are smaller (a NaN query: all of them).

    Rows with many queries are searched one by one (`np.searchsorted`); many short rows at
    once (`count_below_shifted`), where a Python loop over the rows would dominate.
    """
    if queries.ndim == 2 and queries.shape[1] >= ROW_SEARCH_QUERIES:
        return _count_below_rows(sorted_rows, counts, queries)
    return count_below_shifted(sorted_rows, counts, queries)


def count_below_shifted(sorted_rows: FloatArray, counts: IntArray, queries: FloatArray) -> IntArray:
    """`count_below` for all rows at once, in two levels.

    First every `BLOCK`-th value of every row goes on one sorted line (row j shifted by j * D, D at least twice the span of all values) and one
    `np.searchsorted` finds each query's stretch of blocks; rounding of ``x + shift`` is
    monotone, so the stretch brackets the answer even where the shift rounds values together.
    Then an exact binary search on the original values, for all queries at once, narrows
    the stretch to the answer (about log2(BLOCK) steps). Only the coarse line is shifted.
    """
    k, width = sorted_rows.shape
    if k == 0 or width == 0 or queries.size == 0 or not counts.any():
        return np.zeros(queries.shape, dtype=np.int64)
    lowest = float(sorted_rows[:, 0][counts > 0].min())
    highest = float(np.max(np.take_along_axis(sorted_rows, np.maximum(counts - 1, 0)[:, None], axis=1)))
    finite_q = queries[np.isfinite(queries)]
    if finite_q.size:
        lowest, highest = min(lowest, float(finite_q.min())), max(highest, float(finite_q.max()))
    span = highest - lowest
    step = 2.0 ** (math.frexp(span)[1] + 1) if span > 0 else 1.0
    shift = (np.arange(k) * step - lowest)[:, None]
    if not np.isfinite(shift).all() or not math.isfinite(highest + float(shift[-1, 0])):
        return _count_below_rows(sorted_rows, counts, queries)
    coarse = sorted_rows[:, ::BLOCK]
    blocks = coarse.shape[1]
    line = coarse + shift
    filled = (np.arange(blocks) * BLOCK)[None, :] < counts[:, None]
    if not filled.all():  # NaN padding: to the end of its row's stretch
        line = np.where(filled, line, highest + shift)
    flat_line = line.ravel()
    shifted = (queries + shift).ravel()
    base = (np.arange(k, dtype=np.int64) * blocks)[:, None]
    first = np.searchsorted(flat_line, shifted, side="left").reshape(queries.shape) - base
    # blocks before `first` start below the query; the block at `first` starts at or above it
    # unless the shift rounded it onto the query: then search up to the first block above
    cap = counts[:, None]
    flat = sorted_rows.ravel()
    row_base = (np.arange(k, dtype=np.int64) * width)[:, None]
    lo = np.minimum(np.maximum(first - 1, 0) * BLOCK, cap)
    hi = np.minimum(first * BLOCK, cap)
    tied = (hi < cap) & (flat[row_base + np.minimum(hi, width - 1)] < queries)
    if tied.any():
        last = np.searchsorted(flat_line, shifted[tied.ravel()], side="right") - base[np.nonzero(tied)[0], 0]
        hi[tied] = np.minimum(last * BLOCK, cap[np.nonzero(tied)[0], 0])
    padding = np.isnan(queries)
    lo = np.where(padding, cap, lo)  # NaN sorts after every value
    hi = np.where(padding, cap, hi)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        smaller = flat[row_base + np.minimum(mid, width - 1)] < queries
        lo = np.where(active & smaller, mid + 1, lo)
        hi = np.where(active & ~smaller, mid, hi)


def _count_below_rows(sorted_rows: FloatArray, counts: IntArray, queries: FloatArray) -> IntArray:
    """`count_below` one row at a time (many queries a row, or values spanning most of the
    float range)."""
    out = np.zeros(queries.shape, dtype=np.int64)
    for j in range(sorted_rows.shape[0]):
        out[j] = np.searchsorted(sorted_rows[j, : counts[j]], queries[j], side="left")
    return out


def merge(ref_sorted: FloatArray, ref_count: IntArray, cur_sorted: FloatArray, cur_count: IntArray) -> Merged:
    """Merge per-row sorted reference and current values (as `sort_rows` returns them)."""
    k, n_width = ref_sorted.shape
    m_width = cur_sorted.shape[1]
    width = n_width + m_width
    i = np.arange(n_width, dtype=np.int64)[None, :]
    below = count_below(cur_sorted, cur_count, ref_sorted)
    valid_ref = i < ref_count[:, None]
    # reference value i sits after the current values below it; padding goes after all values
    pos = np.where(valid_ref, i + below, i + cur_count[:, None])
    is_ref = np.zeros((k, width), dtype=bool)
    np.put_along_axis(is_ref, pos, True, axis=1)
    merged = np.empty((k, width), dtype=np.float64)
    merged[is_ref] = ref_sorted.ravel()
    merged[~is_ref] = cur_sorted.ravel()
    total = ref_count + cur_count
    j = np.arange(width, dtype=np.int64)[None, :]
    full = bool((total == width).all())
    inside = np.ones((1, 1), dtype=bool) if full else j < total[:, None]
    if not full:
        last = np.take_along_axis(merged, np.maximum(total - 1, 0)[:, None], axis=1)
        merged = np.where(inside, merged, last)
    cum_ref: npt.NDArray[np.signedinteger[Any]] = np.cumsum(
        is_ref, axis=1, dtype=np.int32 if width < 2**31 else np.int64
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # empty rows: NaN
        ref_cdf = cum_ref / ref_count[:, None]
        cur_cdf = (j + 1 - cum_ref) / cur_count[:, None]
    run_end = np.zeros((k, width), dtype=bool)
    run_end[:, :-1] = merged[:, 1:] != merged[:, :-1]
    run_end[np.arange(k), np.maximum(total - 1, 0)] = total > 0
    if not full:
        run_end &= inside
    return Merged(
        values=merged,
        is_reference=is_ref,
        ref_count=ref_count,
        cur_count=cur_count,
        ref_seen=cum_ref,
        ref_cdf=ref_cdf,
        cur_cdf=cur_cdf,
        run_end=run_end,
    )


def distinct_sorted(sorted_rows: FloatArray, counts: IntArray) -> IntArray:
    """(k,) distinct values among each sorted row's `counts` leading values."""
    changes = (sorted_rows[:, 1:] != sorted_rows[:, :-1]) & (np.arange(1, sorted_rows.shape[1]) < counts[:, None])
    return np.where(counts > 0, 1 + np.count_nonzero(changes, axis=1), 0).astype(np.int64)


def distinct(merged: Merged) -> IntArray:
    """(k,) distinct values of reference ∪ current per column."""
    return np.asarray(np.count_nonzero(merged.run_end, axis=1), dtype=np.int64)


def ks_statistic(merged: Merged) -> FloatArray:
    """(k,) two-sample K-S statistic: the largest CDF gap, read where runs of ties end."""
    diff = np.where(merged.run_end, merged.ref_cdf - merged.cur_cdf, 0.0)
    return np.asarray(np.maximum(np.clip(-diff.min(axis=1), 0.0, 1.0), diff.max(axis=1)), dtype=np.float64)


def wasserstein(merged: Merged) -> FloatArray:
    """(k,) first Wasserstein distance: sum of |F_ref - F_cur| times the gap to the next value."""
    gaps = np.diff(merged.values, axis=1)
    with np.errstate(invalid="ignore"):  # rows without values give NaN
        terms = np.abs(merged.ref_cdf[:, :-1] - merged.cur_cdf[:, :-1]) * gaps
    return np.asarray(terms.sum(axis=1), dtype=np.float64)


def value_counts(merged: Merged, rows: IntArray) -> tuple[FloatArray, FloatArray]:
    """(len(rows), G) reference and current counts of each distinct value of the given rows, in
    ascending order of value (G: the most distinct values of those rows; shorter rows are
    padded with zero counts on both sides)."""
    ends = merged.run_end[rows]
    groups = int(np.count_nonzero(ends, axis=1).max()) if len(rows) else 0
    ref = np.zeros((len(rows), groups), dtype=np.float64)
    cur = np.zeros((len(rows), groups), dtype=np.float64)
    if groups == 0:
        return ref, cur
    r, c = np.nonzero(ends)
    at_ref = merged.ref_seen[rows][r, c].astype(np.float64)
    at_cur = c + 1 - at_ref
    slot = np.cumsum(ends, axis=1)[r, c] - 1
    first = slot == 0
    ref[r, slot] = at_ref - np.where(first, 0.0, np.roll(at_ref, 1))
    cur[r, slot] = at_cur - np.where(first, 0.0, np.roll(at_cur, 1))
    return ref, cur


def segment_sums(flat: FloatArray, starts: IntArray) -> FloatArray:
    """Sums of ``flat[starts[i]:starts[i+1]]`` (the last to the end), 0.0 for empty segments."""
    inside = starts < len(flat)  # starts at the very end begin empty segments
    sums = np.zeros(len(starts))
    if inside.any():
        sums[inside] = np.add.reduceat(flat, starts[inside])
    ends = np.append(starts[1:], len(flat))
    return np.where(ends > starts, sums, 0.0)


def wasserstein_sorted(
    ref_sorted: FloatArray, ref_count: IntArray, cur_sorted: FloatArray, cur_count: IntArray
) -> FloatArray:
    """(k,) first Wasserstein distance of each row pair without merging the rows.

    The reference values cut the line into intervals on which the reference CDF is constant
    (f); there the current CDF rises through the sorted current values, and crosses f at the
    current value with index ceil(f*m) - 1, found by arithmetic. Splitting each interval there,
    |F_ref - F_cur| has one sign per piece, and each piece's integral follows from the count
    and the sum of the current values in it (differences of running sums of the current rows).
    Only the reference positions are searched in the current rows (`count_below`).
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # rows without values give NaN
        return _wasserstein_sorted(ref_sorted, ref_count, cur_sorted, cur_count)


def _wasserstein_sorted(
    ref_sorted: FloatArray, ref_count: IntArray, cur_sorted: FloatArray, cur_count: IntArray
) -> FloatArray:
    k, width = ref_sorted.shape
    m_width = cur_sorted.shape[1]
    n = ref_count[:, None].astype(np.float64)
    m = cur_count[:, None].astype(np.float64)
    i = np.arange(width, dtype=np.int64)[None, :]
    valid = i < ref_count[:, None]
    below = np.where(valid, count_below(cur_sorted, cur_count, ref_sorted), cur_count[:, None])
    a = ref_sorted
    last = np.take_along_axis(ref_sorted, np.maximum(ref_count - 1, 0)[:, None], axis=1)
    b = np.empty_like(a)
    b[:, :-1] = a[:, 1:]
    b[:, -1:] = last
    b = np.where(i + 1 < ref_count[:, None], b, a)  # last value and padding: empty interval
    ka = below
    kb = np.empty_like(ka)
    kb[:, :-1] = ka[:, 1:]
    kb[:, -1] = cur_count
    kb = np.where(i + 1 < ref_count[:, None], kb, np.where(valid, cur_count[:, None], ka))
    # interval [a, b) at positions where a < b; the reference CDF there is (i + 1) / n
    f = (i + 1) / n
    cross = ((i + 1) * cur_count[:, None] + ref_count[:, None] - 1) // ref_count[:, None] - 1
    split = np.clip(cross, ka, kb)
    # sums are taken around a value of each row (its reference median) when the data sit far
    # from 0 for their spread: the distance does not move with the data, and cancellation then
    # stays at the scale of the spread, not the level (near 0 that costs a pass for nothing)
    center = np.take_along_axis(ref_sorted, (ref_count // 2)[:, None], axis=1)
    spread = np.take_along_axis(ref_sorted, np.maximum(ref_count - 1, 0)[:, None], axis=1) - ref_sorted[:, :1]
    if (np.abs(center) <= spread).all():
        center = np.zeros_like(center)
        flat = cur_sorted.ravel()
    else:
        flat = (cur_sorted - center).ravel()
    a = ref_sorted - center
    b = b - center
    base = (np.arange(k, dtype=np.int64) * m_width)[:, None]
    crossing = flat[np.minimum(base + np.minimum(split, cur_count[:, None] - 1), flat.size - 1)]
    x = np.where(cross < ka, a, np.where(cross >= kb, b, crossing))
    x = np.where(valid & (i + 1 < ref_count[:, None]), x, a)
    # per position: [ka, split) below the crossing, [split, kb) above; the upper tail is the
    # second stretch of the last value (split = ka, kb = m); [0, ka_0) is the lower tail
    split = np.where(i + 1 < ref_count[:, None], split, ka)
    # sums of stretches of each current row: differences of its running sum (centred values,
    # so the running sum stays at the scale of the spread)
    stretch_ends = np.concatenate([ka, split, kb], axis=1)
    at_ka, at_split, at_kb = np.split(leading_sums(flat.reshape(k, m_width), stretch_ends), 3, axis=1)
    first_sum, second_sum = at_split - at_ka, at_kb - at_split
    low_tail = at_ka[:, 0]
    inner = i + 1 < ref_count[:, None]
    lower = (f - ka / m) * (x - a) - ((split - ka) * x - first_sum) / m
    upper = (split / m - f) * (b - x) + ((kb - split) * b - second_sum) / m
    pieces = np.where(inner, lower + upper, 0.0)
    top = np.where(valid & ~inner, (second_sum - (cur_count[:, None] - ka) * a) / m, 0.0)
    bottom = (below[:, 0] * a[:, 0] - low_tail) / cur_count
    return np.asarray(bottom + pieces.sum(axis=1) + top.sum(axis=1), dtype=np.float64)


ROW_RUNNING_SUM = 1024
"""From rows this long on, `leading_sums` runs one row at a time (its running sum stays in cache)."""


def leading_sums(rows: FloatArray, lengths: IntArray) -> FloatArray:
    """Sums of the first ``lengths[j, i]`` values of row j (0.0 for none), from the running sum
    of each row: row by row for long rows, where reading the running sum back while it is still
    in cache beats one pass over the whole matrix; all rows at once for short ones."""
    k, width = rows.shape
    if width >= ROW_RUNNING_SUM:
        out = np.empty(lengths.shape)
        running = np.zeros(width + 1)
        for j in range(k):
            np.cumsum(rows[j], out=running[1:])
            out[j] = running[lengths[j]]
        return out
    running_rows = np.zeros((k, width + 1))
    np.cumsum(rows, axis=1, out=running_rows[:, 1:])
    return np.asarray(np.take_along_axis(running_rows, lengths, axis=1), dtype=np.float64)


def ks_sorted(
    ref_sorted: FloatArray, ref_count: IntArray, cur_sorted: FloatArray, cur_count: IntArray
) -> FloatArray:
    """(k,) two-sample K-S statistic of each row pair without merging the rows.

    Between two reference values the reference CDF is flat and the current one rises, so the
    largest gap sits at a reference value (right limit) or just below the next one (left
    limit): two searches of the reference values in the current rows give both.
    """
    width = ref_sorted.shape[1]
    i = np.arange(width, dtype=np.int64)[None, :]
    valid = i < ref_count[:, None]
    queries = np.where(valid, ref_sorted, np.nan)
    below = count_below(cur_sorted, cur_count, queries)
    at_or_below = count_below(cur_sorted, cur_count, np.nextafter(queries, np.inf))
    n = ref_count[:, None]
    m = cur_count[:, None]
    run_end = valid & ~(np.append(ref_sorted[:, 1:], ref_sorted[:, -1:], axis=1) == ref_sorted) | (i + 1 == n)
    run_end &= valid
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_cdf = (i + 1) / n
        cur_at = at_or_below / m
        cur_before = np.append(below[:, 1:], below[:, -1:], axis=1) / m
        first = below[:, 0] / cur_count
    plus = np.where(run_end, ref_cdf - cur_at, -np.inf).max(axis=1)
    minus_inner = np.where(run_end & (i + 1 < n), cur_before - ref_cdf, -np.inf).max(axis=1)
    minus = np.maximum(first, minus_inner)
    return np.asarray(np.maximum(np.clip(minus, 0.0, 1.0), plus), dtype=np.float64)


def row_std(values: FloatArray) -> FloatArray:
    """(k,) population standard deviation (ddof=0) of each row's finite values, bit for bit as
    ``np.std`` of those values (which matters for values far from 0, where summation order
    moves the result): rows without missing values in one call, the others one by one."""
    finite = np.isfinite(values)
    full = finite.all(axis=1)
    out = np.full(values.shape[0], np.nan)
    if full.any():
        out[full] = np.std(values[full], axis=1)
    for j in np.flatnonzero(~full & finite.any(axis=1)).tolist():
        out[j] = np.std(values[j][finite[j]])
    return out


def chunks(n_columns: int, width: int) -> list[slice]:
    """Column ranges whose merged layout stays within `CHUNK_VALUES` values."""
    per = max(1, CHUNK_VALUES // max(width, 1))
    return [slice(s, min(s + per, n_columns)) for s in range(0, n_columns, per)]
