"""``mlgitops.drift``: the public name of the notebook drift API (`mlgitops.notebook.drift`).

    import mlgitops
    result = mlgitops.drift.compare(reference_frame, current_frame)
    mlgitops.drift.to_frame(result)

A re-export only; the implementation (and its tuning knobs, such as ``PARALLEL_VALUES``) lives
in `mlgitops.notebook.drift`.
"""

from __future__ import annotations

from mlgitops.notebook.drift import (
    ColumnDrift,
    DriftReport,
    DriftResult,
    build_baseline,
    column_kinds,
    column_values,
    compare,
    report_dict,
    to_frame,
)

__all__ = [
    "ColumnDrift",
    "DriftReport",
    "DriftResult",
    "build_baseline",
    "column_kinds",
    "column_values",
    "compare",
    "report_dict",
    "to_frame",
]
