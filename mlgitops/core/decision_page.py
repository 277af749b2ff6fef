"""HTML for people: one page per decision, and the index of every decision.

A page is self-contained (inline CSS and SVG, no script, no CDN), reads on a laptop screen and
prints (``@media print``). It says what was decided and why, which versions were involved
(`Commit`: sha, author, date, message, digest, from Git), the policy and its thresholds, each
feature's drift against both versions' baselines side by side, the prediction distributions,
the drift score of every feature over the windows that led to the decision (small SVG charts),
and links the full Evidently report beside it.

Pure: strings in, a string out.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlgitops.core import decisions
from mlgitops.core.decisions import Decision, Kind

P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})


@dataclass(frozen=True)
class Commit:
    """What Git says about one commit (for the versions a decision names)."""

    sha: str
    author: str
    date: str
    subject: str
    digest: str | None = None
    """The model's content digest at that commit (its manifest's ``spec.model.digest``)."""


CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#fff;--soft:#f5f7fa;--bad:#b42318;
--ok:#067647;--warn:#b54708;--accent:#1849a9}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0 auto;max-width:1180px;padding:24px 28px}
h1{font-size:1.5rem;margin:.2rem 0 .4rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem;
border-bottom:1px solid var(--line);padding-bottom:.2rem}
a{color:var(--accent)}code,.sha{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
.muted{color:var(--muted)}.nav{font-size:.9rem;margin-bottom:.6rem}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:999px;font-size:.8rem;font-weight:600;
text-transform:uppercase;letter-spacing:.03em;color:#fff;background:var(--muted);vertical-align:middle}
.badge.revert{background:var(--bad)}.badge.alert{background:var(--warn)}.badge.deploy{background:var(--ok)}
.badge.hold{background:#6941c6}.badge.pass{background:#475467}.badge.breach{background:#b54708}
.verdict{font-size:1.05rem;background:var(--soft);border-left:4px solid var(--accent);padding:.6rem .9rem;
margin:.8rem 0}
.why{border-left:4px solid var(--warn);background:#fffaeb;padding:.6rem .9rem;margin:.8rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:.7rem .9rem;background:#fff}
.card h3{margin:0 0 .3rem;font-size:.95rem}.card .role{font-size:.8rem;text-transform:uppercase;
color:var(--muted);letter-spacing:.04em}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}td.when{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
.drift{color:var(--bad);font-weight:600}.fit{color:var(--ok)}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px}
.chart{border:1px solid var(--line);border-radius:6px;padding:.3rem .5rem}
.chart h4{margin:.1rem 0;font-size:.85rem}
svg text{font:11px system-ui,sans-serif;fill:#475467}
.legend span{display:inline-block;margin-right:1rem;font-size:.85rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
.kv td:first-child{color:var(--muted);width:40%}
@media print{body{max-width:none;padding:0;font-size:11pt}.nav,.noprint{display:none}
a{color:inherit;text-decoration:none}.card,.chart,table{break-inside:avoid}
h2{break-after:avoid}.badge{border:1px solid #000;color:#000;background:none!important}}
"""

SERIES_COLOURS = ("#b42318", "#1849a9", "#667085")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "—"


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _roles(d: Decision) -> tuple[str, str]:
    if d.kind is Kind.REVERT:
        return "reverted", "restored"
    if d.kind is Kind.DEPLOY:
        return "deployed", "served before"
    if d.kind is Kind.HOLD:
        return "held (not deployed)", "serves on"
    return "serving", "previous"


def title_of(d: Decision) -> str:
    what = {Kind.REVERT: "Reverted", Kind.ALERT: "Drift alert", Kind.PASS: "Drift window",
            Kind.BREACH: "Drift breach (no action yet)", Kind.DEPLOY: "Deployed", Kind.HOLD: "Held",
            Kind.STEP: "Rollout step"}[d.kind]
    return f"{what}: {d.model} {_short(d.version)}"


def _commit_card(role: str, sha: str | None, commits: Mapping[str, Commit],
                 digest: str | None) -> str:
    if not sha:
        return (f"<div class='card'><div class='role'>{_e(role)}</div>"
                "<p class='muted'>none</p></div>")
    c = commits.get(sha)
    rows = [f"<div class='card'><div class='role'>{_e(role)}</div>",
            f"<h3 class='sha' title='{_e(sha)}'>{_e(sha[:12])}</h3>"]
    if c is not None:
        rows.append(f"<div>{_e(c.subject)}</div>")
        rows.append(f"<div class='muted'>{_e(c.author)} · {_e(c.date)}</div>")
        digest = c.digest or digest
    else:
        rows.append("<div class='muted'>commit details are not in the controller's clone</div>")
    if digest:
        rows.append(f"<div class='muted'>digest <code title='{_e(digest)}'>"
                    f"{_e(digest[:19])}…</code></div>")
    rows.append("</div>")
    return "".join(rows)


def _side(s: decisions.Score | None) -> str:
    if s is None:
        return "<td colspan='4' class='muted'>not measured</td>"
    # painted by this side's own verdict (inline, so no row rule can repaint it)
    cls, word, colour = ("drift", "drifts", "var(--bad)") if s.drifted else ("fit", "fits", "var(--ok)")
    return (f"<td>{_e(s.method)}</td><td class='num'>{_num(s.score)}</td>"
            f"<td class='num'>{_num(s.threshold)}</td>"
            f"<td class='{cls} flag' style='color:{colour}'>{word}</td>")


def attribution_table(d: Decision) -> str:
    left, right = _roles(d)
    rows = [*d.features, *([d.prediction] if d.prediction is not None else [])]
    if not rows:
        return ""
    body = []
    for f in rows:
        mine = decisions.Score(f.method, f.score, f.threshold, f.drifted)
        cls = " class='drifted'" if f.drifted else ""
        body.append(f"<tr{cls}><th scope='row'>{_e(f.name)}</th>{_side(mine)}{_side(f.restored)}</tr>")
    return (
        "<table class='attribution'><thead>"
        f"<tr><th rowspan='2'>feature</th><th colspan='4'>live vs the {_e(left)} version's baseline"
        f" ({_e(_short(d.version))})</th><th colspan='4'>live vs the {_e(right)} version's baseline"
        f" ({_e(_short(d.previous_version))})</th></tr>"
        "<tr><th>method</th><th>score</th><th>threshold</th><th></th>"
        "<th>method</th><th>score</th><th>threshold</th><th></th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        "<p class='muted'>p-value methods (ks, chisquare, z) drift below their threshold; "
        "distances (wasserstein, jensenshannon, psi) at or above it. The share of drifted "
        "features counts the features only; the prediction is shown apart (the Evidently "
        "snapshot and report count the same way).</p>"
    )


def policy_table(d: Decision) -> str:
    if not d.thresholds:
        return ""
    names = {
        "windowRows": "rows per window", "minRows": "minimum rows for a verdict",
        "datasetShare": "share of drifted features that breaches",
        "consecutiveWindows": "breached windows in a row before acting",
        "cooldownSeconds": "seconds between automatic reverts",
        "maxReverts": "automatic reverts per period", "revertPeriodSeconds": "period (seconds)",
        "action": "action", "attribution": "attribution",
        "attributionMargin": "attribution margin (previous must fit this much better)",
    }
    rows = "".join(f"<tr><td>{_e(names.get(k, k))} <code>{_e(k)}</code></td><td>{_e(v)}</td></tr>"
                   for k, v in d.thresholds.items())
    return f"<table class='kv'>{rows}</table>"


def numbers_table(d: Decision) -> str:
    items = [
        ("window", d.window), ("live rows", d.rows),
        ("share of drifted features (vs this version; features only, the prediction is not "
         "counted, as in the Evidently snapshot)", _pct(d.share)),
        ("share drifting vs this version's reference (attribution)", _pct(d.fit_current)),
        ("share drifting vs the previous version's reference", _pct(d.fit_previous)),
        ("breached windows in a row", None if d.streak is None else f"{d.streak} of {d.needed}"),
        ("policy verdict", d.policy_verdict),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items if v is not None)
    return f"<table class='kv'>{rows}</table>"


CHAR_PX = 6.6
"""Width of one character of the chart's 11 px labels (system-ui averages about 0.6 em)."""
LINE_PX = 14.0
"""Height of one line of those labels: rotated labels are at least this far apart."""


@dataclass(frozen=True)
class AxisLabels:
    """How the bin labels under a chart are laid out so that none overlaps another."""

    angle: float
    """Degrees the labels turn counter-clockwise about their end (0: horizontal, centred)."""
    step: int
    """Every ``step``-th label is drawn (1: all)."""
    chars: int
    """Labels longer than this are cut (with ``…``; the bar's tooltip has the whole label)."""
    below: float
    """Room the labels take below the axis (their baseline is `OFFSET_PX` below it)."""
    left: float
    """How far a label reaches left of its bar group's centre."""

    def text(self, label: str) -> str:
        return label if len(label) <= self.chars else label[: max(self.chars - 1, 1)] + "…"


OFFSET_PX = 14.0
"""The labels' baseline below the chart's axis."""


def axis_labels(labels: Sequence[str], group_px: float, *, max_chars: int = 18) -> AxisLabels:
    """Horizontal when the longest label fits its bar group, else turned 45° and thinned.

    Horizontal: drawn labels (centres ``step * group_px`` apart) are at least their width plus
    4 px apart. Turned: parallel labels ``step * group_px`` apart horizontally are
    ``step * group_px * sin 45°`` apart across their lines, at least `LINE_PX`.
    """
    chars = min(max((len(x) for x in labels), default=1), max_chars)
    width = chars * CHAR_PX
    if width + 4 <= group_px:
        return AxisLabels(angle=0.0, step=1, chars=chars, below=OFFSET_PX + 4, left=width / 2)
    sin = math.sin(math.radians(45))
    step = max(1, math.ceil(LINE_PX / (group_px * sin)))
    return AxisLabels(angle=45.0, step=step, chars=chars,
                      below=OFFSET_PX + sin * (width + LINE_PX), left=sin * (width + LINE_PX))


def distribution_chart(dists: Sequence[decisions.Distribution], *, width: int = 720,
                       height: int = 220) -> str:
    """Grouped bars: one group per bin/class, one bar per distribution (SVG).

    Bin labels never overlap (`axis_labels`): turned and thinned when they do not fit.
    """
    if not dists or not dists[0].bins:
        return ""
    bins = dists[0].bins
    top = max((s for d in dists for s in d.shares), default=0.0) or 1.0
    pad_l, pad_t = 40, 10
    group = (width - pad_l - 10) / len(bins)
    axis = axis_labels(bins, group)
    if axis.left - group / 2 > pad_l - 2:  # the first label reaches past the left edge
        pad_l = math.ceil(axis.left - group / 2) + 2
        group = (width - pad_l - 10) / len(bins)
        axis = axis_labels(bins, group)
    pad_b = math.ceil(axis.below) + 4
    height = max(height, pad_t + 120 + pad_b)
    plot_h = height - pad_b - pad_t
    bar = max(group * 0.8 / len(dists), 1.0)
    parts = [f"<svg role='img' aria-label='prediction distributions' viewBox='0 0 {width} {height}' "
             f"width='100%' preserveAspectRatio='xMinYMin meet'>"]
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + plot_h * (1 - frac)
        parts.append(f"<line x1='{pad_l}' x2='{width - 10}' y1='{y:.1f}' y2='{y:.1f}' "
                     "stroke='#e4e7ec'/>")
        parts.append(f"<text x='{pad_l - 4}' y='{y + 4:.1f}' text-anchor='end'>{top * frac:.0%}</text>")
    for i, label in enumerate(bins):
        x0 = pad_l + i * group + group * 0.1
        for j, d in enumerate(dists):
            share = d.shares[i] if i < len(d.shares) else 0.0
            h = plot_h * share / top
            colour = SERIES_COLOURS[j % len(SERIES_COLOURS)]
            parts.append(f"<rect x='{x0 + j * bar:.1f}' y='{pad_t + plot_h - h:.1f}' "
                         f"width='{bar * 0.92:.1f}' height='{h:.1f}' fill='{colour}'>"
                         f"<title>{_e(d.label)} {_e(label)}: {share:.1%}</title></rect>")
        if i % axis.step == 0:
            cx = pad_l + i * group + group / 2
            y = pad_t + plot_h + OFFSET_PX
            if axis.angle:
                parts.append(f"<text class='bin' x='{cx:.1f}' y='{y}' text-anchor='end' "
                             f"transform='rotate(-{axis.angle:g} {cx:.1f} {y})'>"
                             f"{_e(axis.text(label))}</text>")
            else:
                parts.append(f"<text class='bin' x='{cx:.1f}' y='{y}' text-anchor='middle'>"
                             f"{_e(axis.text(label))}</text>")
    parts.append("</svg>")
    legend = "".join(f"<span><i style='background:{SERIES_COLOURS[j % len(SERIES_COLOURS)]}'></i>"
                     f"{_e(d.label)}</span>" for j, d in enumerate(dists))
    return f"<div class='legend'>{legend}</div>{''.join(parts)}"


def trend_charts(history: Sequence[Decision], *, width: int = 260, height: int = 120) -> str:
    """One small chart per feature: its drift score over the windows, threshold dashed (SVG)."""
    windows = [d for d in history if d.features or d.prediction is not None]
    if not windows:
        return ""
    names: list[str] = []
    for d in windows:
        for f in (*d.features, *([d.prediction] if d.prediction else [])):
            if f.name not in names:
                names.append(f.name)
    out = []
    for name in names:
        points: list[tuple[int, float, bool, str]] = []
        threshold: float | None = None
        method = ""
        for i, d in enumerate(windows):
            for f in (*d.features, *([d.prediction] if d.prediction else [])):
                if f.name == name and f.score is not None:
                    points.append((i, f.score, f.drifted, d.kind.value))
                    threshold, method = f.threshold, f.method
        out.append(_sparkline(name, method, points, threshold, len(windows), width, height))
    return f"<div class='charts'>{''.join(out)}</div>"


def _sparkline(name: str, method: str, points: list[tuple[int, float, bool, str]],
               threshold: float | None, n: int, width: int, height: int) -> str:
    pad_l, pad_r, pad_t, pad_b = 34, 8, 8, 18
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [p[1] for p in points] + ([threshold] if threshold is not None else [])
    top = max(values, default=1.0)
    top = top * 1.1 if top > 0 else 1.0

    def x(i: int) -> float:
        return pad_l + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - min(max(v / top, 0.0), 1.0))

    parts = [f"<svg role='img' aria-label='drift score of {_e(name)}' viewBox='0 0 {width} {height}' "
             "width='100%'>",
             f"<line x1='{pad_l}' x2='{width - pad_r}' y1='{pad_t + plot_h}' y2='{pad_t + plot_h}' "
             "stroke='#d0d5dd'/>",
             f"<text x='{pad_l - 3}' y='{pad_t + 8}' text-anchor='end'>{_num(top)}</text>",
             f"<text x='{pad_l - 3}' y='{pad_t + plot_h}' text-anchor='end'>0</text>",
             f"<text x='{pad_l}' y='{height - 3}'>window 1</text>"]
    if n > 1:
        parts.append(f"<text x='{width - pad_r}' y='{height - 3}' text-anchor='end'>window {n}</text>")
    if threshold is not None:
        ty = y(threshold)
        parts.append(f"<line x1='{pad_l}' x2='{width - pad_r}' y1='{ty:.1f}' y2='{ty:.1f}' "
                     "stroke='#b54708' stroke-dasharray='4 3'><title>threshold "
                     f"{_num(threshold)}</title></line>")
    if len(points) > 1:
        path = " ".join(f"{'M' if k == 0 else 'L'}{x(i):.1f},{y(v):.1f}"
                        for k, (i, v, _, _) in enumerate(points))
        parts.append(f"<path d='{path}' fill='none' stroke='#1849a9' stroke-width='1.6'/>")
    for i, v, drifted, kind in points:
        colour = "#b42318" if drifted else "#1849a9"
        parts.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='3' fill='{colour}'>"
                     f"<title>window {i + 1} ({kind}): {_num(v)}"
                     f"{' — drifted' if drifted else ''}</title></circle>")
    parts.append("</svg>")
    note = "lower = drift" if method in P_VALUE_METHODS else "higher = drift"
    return (f"<div class='chart'><h4>{_e(name)} <span class='muted'>{_e(method)}, {note}</span></h4>"
            f"{''.join(parts)}</div>")


def render(
    d: Decision,
    *,
    commits: Mapping[str, Commit] | None = None,
    history: Sequence[Decision] = (),
    evidently_available: bool = False,
    index_href: str = "./",
    extra_html: str = "",
) -> str:
    """The decision page of ``d`` (``history``: the windows of its version up to it;
    ``extra_html``: sections added at the end, e.g. performance from labels)."""
    commits = commits or {}
    left, right = _roles(d)
    title = title_of(d)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<div class='nav'><a href='{_e(index_href)}'>← every decision of {_e(d.model)}</a> · "
        "<a href='/reports/'>all models</a></div>",
        f"<h1><span class='badge {d.kind.value}'>{_e(d.kind.value)}</span> {_e(title)}</h1>",
        f"<div class='muted'>{_e(decisions.iso(d.at))} · decision <code>{_e(d.id)}</code>"
        + (f" · commit <code>{_e(_short(d.commit))}</code>" if d.commit else "") + "</div>",
        f"<div class='verdict'>{_e(d.verdict)}</div>",
    ]
    if d.why_not_reverted:
        parts.append(f"<div class='why'><strong>Why no revert was made:</strong> "
                     f"{_e(d.why_not_reverted)}.</div>")
    if d.outcome:
        parts.append(f"<div class='why'><strong>Outcome:</strong> {_e(d.outcome)}</div>")
    if d.kind is Kind.REVERT and d.commit:
        parts.append(f"<p>The revert commit <code>{_e(d.commit)}</code> returned {_e(d.model)} to "
                     f"<code>{_e(_short(d.previous_version))}</code> and quarantined "
                     f"<code>{_e(_short(d.version))}</code>'s digest.</p>")
    parts.append("<h2>Versions</h2><div class='grid'>")
    parts.append(_commit_card(left, d.version, commits, d.digest))
    parts.append(_commit_card(right, d.previous_version, commits, d.previous_digest))
    if d.commit and d.kind is Kind.REVERT:
        parts.append(_commit_card("revert commit", d.commit, commits, None))
    parts.append("</div>")
    if d.features or d.prediction is not None:
        parts.append("<h2>Attribution: this window against both baselines</h2>")
        parts.append(numbers_table(d))
        parts.append(attribution_table(d))
    if d.distributions:
        parts.append("<h2>Prediction distribution</h2>")
        parts.append(distribution_chart(d.distributions))
    charts = trend_charts(history)
    if charts:
        parts.append(f"<h2>Drift score per feature over the windows of {_e(_short(d.version))}</h2>")
        parts.append(charts)
    if d.thresholds:
        parts.append("<h2>Policy</h2>")
        parts.append(policy_table(d))
    if d.evidently_file:
        if evidently_available:
            parts.append(f"<h2>Full report</h2><p><a class='evidently' href='{_e(d.evidently_file)}'>"
                         "Open the full Evidently report</a> (live sample against the "
                         f"{_e(left)} version's reference sample).</p>")
        else:
            parts.append("<h2>Full report</h2><p class='muted'>The Evidently report "
                         f"<code>{_e(d.evidently_file)}</code> is being built or could not be "
                         "built; reload this page in a minute.</p>")
    parts.append(extra_html)
    parts.append("</body></html>\n")
    return "".join(parts)


@dataclass(frozen=True)
class Nav:
    """Where a page of the index sits: its number, size, the total, and the links around it."""

    total: int
    page: int = 1
    limit: int = 100
    kind: str | None = None
    """The ``kind`` query of this listing (kept in the links), None for the default."""
    more: bool = False
    """Whether older decisions follow this page."""

    def href(self, page: int) -> str:
        query = [f"page={page}"] if page > 1 else []
        if self.limit != 100:
            query.append(f"limit={self.limit}")
        if self.kind:
            query.append(f"kind={self.kind}")
        return "?" + "&".join(query)


def index(shown: Sequence[Decision], *, model: str | None = None,
          nav: Nav | None = None) -> str:
    """One page of decisions (``shown``, newest first): time, kind, model, commits, verdict,
    link, and the links to the newer and older pages."""
    nav = nav or Nav(total=len(shown), limit=max(len(shown), 1))
    title = f"Decisions of {model}" if model else "Decisions"
    rows = []
    for d in shown:
        href = f"/reports/{d.model}/{d.id}"
        rows.append(
            f"<tr class='{d.kind.value}'><td class='when'>{_e(decisions.iso(d.at))}</td>"
            f"<td><span class='badge {d.kind.value}'>{_e(d.kind.value)}</span></td>"
            f"<td><a href='/reports/{_e(d.model)}/'>{_e(d.model)}</a></td>"
            f"<td class='sha'>{_e(_short(d.version))}</td>"
            f"<td class='sha'>{_e(_short(d.previous_version))}</td>"
            f"<td>{_e(d.verdict)}</td><td><a href='{_e(href)}'>page</a></td></tr>"
        )
    filters = " · ".join(f"<a href='?kind={k.value}'>{k.value}</a>" for k in Kind)
    filters += " · <a href='?kind=all'>everything, quiet windows included</a>"
    first = (nav.page - 1) * nav.limit
    links = []
    if nav.page > 1:
        links.append(f"<a rel='prev' href='{_e(nav.href(nav.page - 1))}'>← newer</a>")
    if nav.more:
        links.append(f"<a rel='next' href='{_e(nav.href(nav.page + 1))}'>older →</a>")
    more = (f"<p class='muted pages'>Decisions {first + 1}–{first + len(shown)} of {nav.total}, "
            f"newest first. {' · '.join(links)}</p>" if links else "")
    empty = ("<p>No decisions yet: the controller records one for every deploy, hold, drift window "
             "and revert.</p>" if not shown else "")
    top = "<div class='nav'><a href='/reports/'>all models</a></div>" if model else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{top}<h1>{_e(title)}</h1>"
        f"<p class='noprint'>Show only: {filters} · <a href='?'>decisions that acted</a></p>"
        f"{more}{empty}"
        + ("<table class='decisions'><thead><tr><th>time (UTC)</th><th>kind</th><th>model</th>"
           "<th>version</th><th>previous / restored</th><th>verdict</th><th></th></tr></thead>"
           f"<tbody>{''.join(rows)}</tbody></table>{more}" if shown else "")
        + "</body></html>\n"
    )
