"""The performance section of a decision page: realized and estimated figures per version.

Pure: figures in, HTML out (the page's own styles: ``table``, ``muted``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from mlgitops.core.performance import cbpe
from mlgitops.core.performance.realized import Figure


def section(figures: Sequence[Figure], *, versions: Sequence[str | None]) -> str:
    """The section for ``versions`` (in that order; others left out), or "" when none of them
    has a kept row."""
    shown = [f for v in versions if v for f in figures if f.version == v]
    if not shown:
        return ""
    names = sorted({k for f in shown for k in (*f.realized, *f.estimated)})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for f in shown:
        cells = []
        for n in names:
            real = f.realized.get(n)
            est = f.estimated.get(n)
            text = "-" if real is None else f"{real:.4f}"
            if est is not None:
                text += f" <span class='muted'>(est. {est:.4f})</span>"
            elif real is None and n in f.omitted:
                text = f"<span class='muted' title='{html.escape(f.omitted[n])}'>n/a</span>"
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td><code>{html.escape(f.version[:12])}</code></td>"
                    f"<td>{f.labelled} / {f.rows}</td>{''.join(cells)}</tr>")
    caveat = ""
    if any(f.estimated for f in shown):
        caveat = f"<p class='muted'>est.: {html.escape(cbpe.CAVEAT)}</p>"
    return ("<h2>Performance from labels</h2><p class='muted'>Realized: scikit-learn's metrics "
            "on the kept predictions whose label came back (as this page was written).</p>"
            f"<table><tr><th>version</th><th>labelled / kept rows</th>{head}</tr>"
            f"{''.join(rows)}</table>{caveat}")
