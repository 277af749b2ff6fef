"""Normed Wasserstein distance of a large numeric column, one column at a time.

Evidently scores a numeric column of more than 1000 reference values (and more than five
distinct values) by ``wasserstein_distance(reference, current) / max(std(reference), 0.001)``,
drifted at >= 0.1. The first Wasserstein distance is also the mean gap between the two
samples' quantile functions: for two sorted samples a (n values) and b (m values),

    W1 = (1 / (n * m)) * sum over the pieces of [0, n*m) cut at every multiple of m and of n
                          of (piece length) * |a[piece start // m] - b[piece start // n]|,

which for n == m is ``mean(|a - b|)``. The pieces depend only on (n, m), so they are worked out
once per pair of sizes (`coupling`) and each column costs two sorts and one pass.

The sorts are of float32 copies, centred on the reference mean (half the cost of float64
sorts). Rounding each value to float32 moves it by at most 2**-24 of its magnitude, so the
distance moves by at most 2**-24 * (mean |a| + mean |b|) (triangle inequality), where
mean |a| <= std(reference) (Cauchy-Schwarz, a centred) and mean |b| <= mean |a| + W1; bounded
here with `ROUNDING` = 2**-23. That is ~2.5e-7 of a normed score near the threshold. When the
bound exceeds `TOLERANCE` * max(1, score), or the score lies within it of the threshold, the
column is computed again from float64 sorts. So:

- the verdict is the one the exact distance gives (float64 arithmetic throughout, equal to
  scipy's up to summation order: ~1e-15 relative, the only place a tie can differ);
- the reported score is within `TOLERANCE` * max(1, score) of scipy's (1e-6 absolute below 1,
  relative above; measured ~1e-9).

The reference's standard deviation is computed as ``np.std`` does (same operations, same
order), bit for bit.

Pure: numpy only.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TOLERANCE = 1e-6
"""Largest gap between a reported score and scipy's: absolute below 1, relative above."""
ROUNDING = 2.0**-23
"""Bound on the relative move of a value rounded to float32 (2**-24, with a factor 2 spare)."""
SMALLEST = 2.0**-140
"""Bound on the absolute move of a value rounded to float32 near zero (subnormals)."""
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Coupling(NamedTuple):
    """Pieces of the quantile coupling of n and m sorted values (see the module docstring):
    the pieces starting at a multiple of m pair a[i] with b[b_index[i]] over `a_weight[i]`; those
    starting at another multiple of n pair a[a_index[j]] with b[j] over `b_weight[j]` (zero for
    multiples of n that are also multiples of m). Weights are lengths / (n * m)."""

    b_index: IntArray
    a_weight: FloatArray
    a_index: IntArray
    b_weight: FloatArray


@lru_cache(maxsize=4)
def coupling(n: int, m: int) -> Coupling:
    """The pieces of [0, n*m) cut at multiples of m and of n, for n != m (cached per sizes)."""
    nm = n * m
    i = np.arange(n, dtype=np.int64)
    start = i * m
    b_index = start // n
    a_len = np.minimum(start + m, (b_index + 1) * n) - start
    j = np.arange(m, dtype=np.int64)
    start = j * n
    a_index = start // m
    b_len = np.where(start % m == 0, 0, np.minimum(start + n, (a_index + 1) * m) - start)
    return Coupling(b_index, a_len / nm, a_index, b_len / nm)


class Workspace:
    """Scratch arrays reused from column to column (one per thread): allocating fresh ones
    costs more than the arithmetic done in them (each new large array is new pages)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], npt.NDArray[Any]] = {}

    def array(self, name: str, size: int, dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
        """An uninitialised array of `size` values, the same memory on every call for `name`."""
        key = (name, np.dtype(dtype).str)
        held = self._arrays.get(key)
        if held is None or len(held) < size:
            held = self._arrays[key] = np.empty(size, dtype=dtype)
        return held[:size]


def distance_sorted(a: npt.NDArray[Any], b: npt.NDArray[Any], work: Workspace | None = None) -> float:
    """First Wasserstein distance of two sorted, non-empty samples of one dtype: gaps in that
    dtype (float32 gaps round by at most 2**-24 of themselves), sums in float64."""
    work = work or Workspace()
    n, m = len(a), len(b)
    dtype = np.result_type(a, b).type
    if n == m:
        gaps = np.subtract(a, b, out=work.array("gaps", n, dtype))
        return float(np.add.reduce(np.abs(gaps, out=gaps), dtype=np.float64)) / n
    c = coupling(n, m)
    gaps = np.subtract(a, np.take(b, c.b_index), out=work.array("gaps", n, dtype))
    total = float(np.add.reduce(np.abs(gaps, out=gaps) * c.a_weight))
    gaps = np.subtract(np.take(a, c.a_index), b, out=work.array("gaps", m, dtype))
    return total + float(np.add.reduce(np.abs(gaps, out=gaps) * c.b_weight))


class Scored(NamedTuple):
    score: float
    """Normed distance: W1 / max(std(reference), 0.001)."""
    exact: bool
    """True when computed from float64 sorts (the float32 bound did not settle it)."""


def finite(values: FloatArray) -> tuple[FloatArray, float]:
    """`values` without NaN and +-inf (the array itself when it has none), and their sum
    (``np.add.reduce``; not finite when it overflows)."""
    total = float(np.add.reduce(values)) if len(values) else 0.0
    if math.isfinite(total):
        return values, total
    kept = values[np.isfinite(values)]
    return kept, float(np.add.reduce(kept)) if len(kept) else 0.0


def normed_wasserstein(
    reference: FloatArray,
    current: FloatArray,
    *,
    threshold: float,
    min_reference: int,
    few_values: int,
    work: Workspace | None = None,
) -> Scored | None:
    """Evidently's normed Wasserstein score of one column (1-D float64 arrays, missing values
    as NaN or +-inf, left out); None when the column is not for it: at most `min_reference`
    reference values, at most `few_values` distinct ones, no current values, or values whose
    sum overflows (the caller's general path then decides)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow and infinities are handled
        return _normed_wasserstein(reference, current, threshold, min_reference, few_values, work or Workspace())


def _normed_wasserstein(
    reference: FloatArray, current: FloatArray, threshold: float, min_reference: int, few_values: int, work: Workspace
) -> Scored | None:
    ref, total = finite(reference)
    n = len(ref)
    if n <= min_reference or not math.isfinite(total):
        return None
    # np.std's own steps (numpy/_core/_methods.py `_var`), so the result is bit for bit the same
    mean = np.array([total]) / n
    centred = np.subtract(ref, mean, out=work.array("centred", n, np.float64))
    ref32 = work.array("reference", n, np.float32)
    np.copyto(ref32, centred, casting="same_kind")
    np.multiply(centred, centred, out=centred)
    std = math.sqrt(float(np.add.reduce(centred)) / n)
    norm = max(std, 0.001)
    ref32.sort()
    if not _more_than(ref32, few_values):
        return None
    cur32 = work.array("current", len(current), np.float32)
    np.subtract(current, mean, out=cur32, casting="same_kind")
    cur32.sort()
    if len(cur32) and not (math.isfinite(float(cur32[0])) and math.isfinite(float(cur32[-1]))):
        cur = finite(current)[0]  # missing values (or values beyond float32's range)
        cur32 = cur32[: len(cur)]
        np.subtract(cur, mean, out=cur32, casting="same_kind")
        cur32.sort()
        if len(cur32) and not math.isfinite(float(cur32[-1]) - float(cur32[0])):
            return _exact(ref, cur, norm)
    if len(cur32) == 0:
        return None
    if not math.isfinite(float(ref32[-1]) - float(ref32[0])):
        return _exact(ref, finite(current)[0], norm)
    distance = distance_sorted(ref32, cur32, work)
    score = distance / norm
    # mean |a| <= std (Cauchy-Schwarz, a centred) and mean |b| <= mean |a| + W1 (triangle); the
    # float32 gaps add at most 2**-24 W1: all within ROUNDING = 2**-23 of (2 std + W1)
    bound = (ROUNDING * (2.0 * std + distance) + SMALLEST) / norm + 1e-12 * score
    if bound > TOLERANCE * max(1.0, score) or abs(score - threshold) <= bound:
        return _exact(ref, finite(current)[0], norm)
    return Scored(score, exact=False)


def _exact(ref: FloatArray, cur: FloatArray, norm: float) -> Scored:
    return Scored(distance_sorted(np.sort(ref), np.sort(cur)) / norm, exact=True)


def _more_than(sorted_values: npt.NDArray[Any], count: int) -> bool:
    """Whether a sorted array holds more than `count` distinct values (count + 1 searches)."""
    seen, at = 0, 0
    while at < len(sorted_values) and seen <= count:
        at = int(np.searchsorted(sorted_values, sorted_values[at], side="right"))
        seen += 1
    return seen > count
