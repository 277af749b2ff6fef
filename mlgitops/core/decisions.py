"""Decision records: every deploy, hold, closed drift window and revert, as one JSON-ready value.

A `Decision` is what people read (the decision page, the reports index, notifications) and what
sinks record elsewhere (Evidently snapshots, MLflow runs, webhooks). The controller appends each
one to a log and hands it to its sinks; nothing here does I/O.

Ids are stable and short: ``<model>-<utc yyyymmddThhmmss>-<kind>-<6 hex>``, the hex a hash of
the model, kind, time and version (`make_id`), so the same decision always gets the same id.

Per-feature rows (`Feature`) carry the window's drift against the serving (for a revert: the
reverted) version's baseline, and for windows with a previous version also against the
restored (previous) version's baseline (`Feature.restored`), both with method, score, threshold.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mlgitops.core import clock, policy, stats
from mlgitops.core.manifest import DriftPolicy

ID_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?-\d{8}T\d{6}-[a-z]+-[0-9a-f]{6}")
"""What a decision id looks like (also what URLs ``/reports/<model>/<id>`` accept)."""


class Kind(enum.Enum):
    DEPLOY = "deploy"  # a version started serving
    HOLD = "hold"  # a version was not deployed (invalid, refused, quarantined); the old one serves
    PASS = "pass"  # a closed drift window that did not breach (no drift, or too few rows)
    BREACH = "breach"  # a closed window that breached but did not act (streak short, action none)
    ALERT = "alert"  # a closed window that alerted (a revert was not possible or not warranted)
    REVERT = "revert"  # a closed window that reverted the version in Git
    STEP = "step"  # a progressive rollout's step passed (the next started, or it was promoted)

    @property
    def notifies(self) -> bool:
        """Whether people are told (webhooks): decisions that act (not a window that did not)."""
        return self not in (Kind.PASS, Kind.BREACH)

    @property
    def window(self) -> bool:
        """Whether this is a closed drift window (pass, breach, alert, revert)."""
        return self in (Kind.PASS, Kind.BREACH, Kind.ALERT, Kind.REVERT)

    @classmethod
    def of_verdict(cls, verdict: policy.Verdict) -> Kind:
        return {policy.Verdict.REVERT: cls.REVERT, policy.Verdict.ALERT: cls.ALERT,
                policy.Verdict.BREACH: cls.BREACH}.get(verdict, cls.PASS)


@dataclass(frozen=True)
class Score:
    """One feature of a window against one baseline."""

    method: str
    score: float | None
    """None when it could not be computed (NaN)."""
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "score": self.score, "threshold": self.threshold,
                "drifted": self.drifted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        return cls(method=str(data["method"]), score=_opt_float(data.get("score")),
                   threshold=float(data["threshold"]), drifted=bool(data["drifted"]))


@dataclass(frozen=True)
class Feature:
    """One feature (or ``prediction``) of a window: vs the serving baseline, and vs the restored."""

    name: str
    method: str
    score: float | None
    threshold: float
    drifted: bool
    restored: Score | None = None
    """The same window against the previous (for a revert: restored) version's baseline."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "score": self.score,
                "threshold": self.threshold, "drifted": self.drifted,
                "restored": None if self.restored is None else self.restored.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        restored = data.get("restored")
        return cls(name=str(data["name"]), method=str(data["method"]),
                   score=_opt_float(data.get("score")), threshold=float(data["threshold"]),
                   drifted=bool(data["drifted"]),
                   restored=Score.from_dict(restored) if isinstance(restored, Mapping) else None)


@dataclass(frozen=True)
class Distribution:
    """A prediction distribution drawn on the page: shares per bin (or class)."""

    label: str
    bins: tuple[str, ...]
    shares: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "bins": list(self.bins), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Distribution:
        return cls(label=str(data["label"]), bins=tuple(str(b) for b in data["bins"]),
                   shares=tuple(float(s) for s in data["shares"]))


@dataclass(frozen=True)
class Decision:
    """One decision of the controller about one model, with everything a page needs to explain it."""

    id: str
    model: str
    kind: Kind
    at: float
    """Seconds since the epoch (UTC)."""
    version: str | None
    """The commit serving (deploy, windows), reverted (revert) or held (hold)."""
    previous_version: str | None
    """The version restored by a revert, or that served before (deploy), or serves on (hold)."""
    verdict: str
    """The sentence saying what was decided and why."""
    features: tuple[Feature, ...] = ()
    prediction: Feature | None = None
    share: float | None = None
    """Share of drifted features against the serving baseline (windows)."""
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    """The drift policy the decision applied (``spec.drift``)."""
    window: int | None = None
    """Index of the closed window for this version (1-based)."""
    rows: int | None = None
    report_url: str | None = None
    """The decision page's URL (``{base}/reports/<model>/<id>``)."""
    sample_path: str | None = None
    """Parquet of the live reservoir sample at this window (kept with bounded retention)."""
    digest: str | None = None
    previous_digest: str | None = None
    commit: str | None = None
    """The commit the decision made (a revert commit), when it made one."""
    policy_verdict: str | None = None
    """`policy.Verdict` value of a window: ok, inconclusive, breach, alert, revert."""
    why_not_reverted: str | None = None
    """For an alert: why no revert was made."""
    fit_current: float | None = None
    fit_previous: float | None = None
    streak: int | None = None
    needed: int | None = None
    distributions: tuple[Distribution, ...] = ()
    evidently_file: str | None = None
    """The file name of the full Evidently report beside the page (``/reports/<model>/<file>``)."""
    outcome: str | None = None
    """What happened when acting (e.g. a revert that was skipped or failed), when not the plan."""

    @property
    def page_path(self) -> str:
        """The gateway path of the decision page."""
        return f"/reports/{self.model}/{self.id}"

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    def with_(self, **changes: Any) -> Decision:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "kind": self.kind.value, "at": self.at,
            "time": iso(self.at), "version": self.version,
            "previousVersion": self.previous_version, "verdict": self.verdict,
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "share": self.share, "thresholds": dict(self.thresholds), "window": self.window,
            "rows": self.rows, "reportUrl": self.report_url, "samplePath": self.sample_path,
            "digest": self.digest, "previousDigest": self.previous_digest, "commit": self.commit,
            "policyVerdict": self.policy_verdict, "whyNotReverted": self.why_not_reverted,
            "fitCurrent": self.fit_current, "fitPrevious": self.fit_previous,
            "streak": self.streak, "needed": self.needed,
            "distributions": [d.to_dict() for d in self.distributions],
            "evidentlyFile": self.evidently_file, "outcome": self.outcome,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Parse a record; ValueError naming what is wrong."""
        try:
            pred = data.get("prediction")
            return cls(
                id=str(data["id"]), model=str(data["model"]), kind=Kind(data["kind"]),
                at=float(data["at"]), version=_opt_str(data.get("version")),
                previous_version=_opt_str(data.get("previousVersion")),
                verdict=str(data.get("verdict", "")),
                features=tuple(Feature.from_dict(f) for f in data.get("features") or ()),
                prediction=Feature.from_dict(pred) if isinstance(pred, Mapping) else None,
                share=_opt_float(data.get("share")),
                thresholds=dict(data.get("thresholds") or {}),
                window=_opt_int(data.get("window")), rows=_opt_int(data.get("rows")),
                report_url=_opt_str(data.get("reportUrl")),
                sample_path=_opt_str(data.get("samplePath")),
                digest=_opt_str(data.get("digest")),
                previous_digest=_opt_str(data.get("previousDigest")),
                commit=_opt_str(data.get("commit")),
                policy_verdict=_opt_str(data.get("policyVerdict")),
                why_not_reverted=_opt_str(data.get("whyNotReverted")),
                fit_current=_opt_float(data.get("fitCurrent")),
                fit_previous=_opt_float(data.get("fitPrevious")),
                streak=_opt_int(data.get("streak")), needed=_opt_int(data.get("needed")),
                distributions=tuple(Distribution.from_dict(d)
                                    for d in data.get("distributions") or ()),
                evidently_file=_opt_str(data.get("evidentlyFile")),
                outcome=_opt_str(data.get("outcome")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a decision record ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Decision:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise ValueError("a decision record is a JSON object")
        return cls.from_dict(data)


def latest(records: Iterable[Any]) -> list[Decision]:
    """Parsed records (mappings or JSON lines), a later one with the same id replacing the
    earlier, oldest first; records that do not parse are skipped."""
    by_id: dict[str, Decision] = {}
    for raw in records:
        try:
            d = Decision.from_dict(raw) if isinstance(raw, Mapping) else Decision.from_json(raw)
        except ValueError:
            continue  # a torn last line after a crash, or a record of a future version
        by_id[d.id] = d
    return sorted(by_id.values(), key=lambda d: d.at)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def iso(at: float) -> str:
    """A decision's time as its record writes it (``core.clock.iso``, to the second)."""
    return clock.iso(at)


def make_id(*, model: str, kind: Kind, at: float, version: str | None) -> str:
    """``<model>-<utc yyyymmddThhmmss>-<kind>-<6 hex>`` (stable for the same inputs)."""
    stamp = clock.compact(at)
    h = hashlib.sha256(f"{model}\0{kind.value}\0{at!r}\0{version or ''}".encode()).hexdigest()[:6]
    return f"{model}-{stamp}-{kind.value}-{h}"


def valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def page_url(base: str | None, *, model: str, id: str) -> str | None:
    """Where the gateway at ``base`` serves the decision page (None without a base)."""
    if not base:
        return None
    return f"{base.rstrip('/')}/reports/{model}/{id}"


def thresholds_of(rules: DriftPolicy) -> dict[str, Any]:
    return {
        "windowRows": rules.window_rows, "minRows": rules.min_rows,
        "datasetShare": rules.dataset_share, "consecutiveWindows": rules.consecutive_windows,
        "cooldownSeconds": rules.cooldown_seconds, "maxReverts": rules.max_reverts,
        "revertPeriodSeconds": rules.revert_period_seconds, "action": rules.action,
        "attribution": rules.attribution, "attributionMargin": policy.ATTRIBUTION_MARGIN,
    }


# ---------------------------------------------------------------------------------------------
# Building a window's decision


def against(reference: stats.ColumnBaseline, onto: stats.ColumnBaseline,
            live: stats.ColumnCounts) -> Score | None:
    """``live`` (counted on ``onto``'s bins/categories) against another version's ``reference``.

    The measure `policy.fit_share` counts (`policy.against`), with its method and score; None
    when the two columns are of different kinds or ``reference`` has no values.
    """
    m = policy.against(reference, onto, live)
    return None if m is None else Score(m.method, _finite(m.score), m.threshold, m.drifted)


def features_of(evidence: policy.Evidence, *, baseline: stats.Baseline,
                previous: stats.Baseline | None, window: stats.LiveStats) -> tuple[Feature, ...]:
    """Per-feature rows of a window: the evidence's scores, plus against ``previous``."""
    out: list[Feature] = []
    for name, method, score, threshold, drifted in evidence.columns:
        restored: Score | None = None
        if previous is not None and name in previous.names:
            restored = against(previous.column(name), baseline.column(name), window.column(name))
        out.append(Feature(name, method, _finite(score), threshold, drifted, restored))
    return tuple(out)


def prediction_of(evidence: policy.Evidence, *, baseline: stats.Baseline,
                  previous: stats.Baseline | None, window: stats.LiveStats) -> Feature | None:
    if evidence.prediction_method is None or evidence.prediction_threshold is None:
        return None
    restored: Score | None = None
    live = window.prediction()
    if (previous is not None and previous.prediction is not None and baseline.prediction is not None
            and live is not None):
        restored = against(previous.prediction, baseline.prediction, live)
    return Feature(stats.PREDICTION, evidence.prediction_method, _finite(evidence.prediction_score),
                   evidence.prediction_threshold, evidence.prediction_drifted, restored)


MAX_BINS = 12
"""A numeric prediction distribution is drawn on at most this many bins."""


def distributions_of(*, baseline: stats.Baseline, previous: stats.Baseline | None,
                     window: stats.LiveStats, serving_label: str,
                     previous_label: str) -> tuple[Distribution, ...]:
    """The prediction distributions of the window and of both versions' references, same bins."""
    ref = baseline.prediction
    live = window.prediction()
    if ref is None or live is None:
        return ()
    prev = previous.prediction if previous is not None else None
    if ref.kind == "categorical":
        labels = list(ref.categories)
        rows = [(serving_label, [float(c) for c in ref.counts])]
        if prev is not None and prev.kind == "categorical":
            known = dict(zip(prev.categories, prev.counts, strict=True))
            rows.append((previous_label, [float(known.get(c, 0)) for c in labels]))
        rows.append(("live", [float(c) for c in live.counts]))
        if live.other:
            labels.append("other")
            rows = [(lbl, [*vals, float(live.other) if lbl == "live" else 0.0])
                    for lbl, vals in rows]
        return tuple(_normalised(lbl, labels, vals) for lbl, vals in rows)
    groups = _groups(len(ref.counts))
    edges = ref.edges
    labels = [_bin_label(edges, lo, hi) for lo, hi in groups]
    rows = [(serving_label, _grouped(ref.counts, groups))]
    if prev is not None:
        laid = policy.laid_on(prev, ref)
        if laid is not None:
            rows.append((previous_label, _grouped(laid.counts, groups)))
    rows.append(("live", _grouped(tuple(int(c) for c in live.bin_counts), groups)))
    return tuple(_normalised(lbl, labels, vals) for lbl, vals in rows)


def _groups(n: int) -> list[tuple[int, int]]:
    """Consecutive side-right bins merged into at most `MAX_BINS` groups [lo, hi)."""
    if n <= MAX_BINS:
        return [(i, i + 1) for i in range(n)]
    bounds = np.linspace(0, n, MAX_BINS + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _grouped(counts: tuple[int, ...] | tuple[float, ...], groups: list[tuple[int, int]]) -> list[float]:
    return [float(sum(counts[lo:hi])) for lo, hi in groups]


def _bin_label(edges: tuple[float, ...], lo: int, hi: int) -> str:
    # bin i is [edges[i-1], edges[i]); bin 0 is below the first edge, bin len(edges) above the last
    left = f"{edges[lo - 1]:.3g}" if lo >= 1 else "-inf"
    right = f"{edges[hi - 1]:.3g}" if hi - 1 < len(edges) else "+inf"
    return f"[{left}, {right})"


def _normalised(label: str, bins: list[str], values: list[float]) -> Distribution:
    total = sum(values)
    shares = tuple(round(v / total, 6) if total else 0.0 for v in values)
    return Distribution(label, tuple(bins), shares)


def why_not_reverted(decision: policy.Decision, rules: DriftPolicy) -> str | None:
    """For an alert: which rule kept it from reverting (the policy's order, see `policy`)."""
    if decision.verdict is not policy.Verdict.ALERT:
        return None
    if decision.attributable is False:
        return policy.attribute(decision.evidence, rules)[1]
    if rules.action == "alert":
        return "spec.drift.action is alert: this model is never reverted automatically"
    if decision.evidence.revert_blocked:
        return decision.evidence.revert_blocked
    if decision.reverts_in_period >= rules.max_reverts:
        return (f"{decision.reverts_in_period} automatic revert(s) already happened within "
                f"{rules.revert_period_seconds:.0f}s (spec.drift.maxReverts {rules.max_reverts})")
    return (f"the last automatic revert was less than spec.drift.cooldownSeconds "
            f"({rules.cooldown_seconds:.0f}s) ago")


def of_window(
    decision: policy.Decision,
    *,
    model: str,
    version: str,
    digest: str | None,
    previous_version: str | None,
    rules: DriftPolicy,
    baseline: stats.Baseline,
    previous: stats.Baseline | None,
    window: stats.LiveStats,
    index: int,
    base_url: str | None,
    sample_path: str | None = None,
) -> Decision:
    """The record of one closed window (pass, breach, alert or revert), both sides per feature."""
    kind = Kind.of_verdict(decision.verdict)
    ident = make_id(model=model, kind=kind, at=decision.at, version=version)
    ev = decision.evidence
    reverting = kind is Kind.REVERT
    return Decision(
        id=ident, model=model, kind=kind, at=decision.at, version=version,
        previous_version=previous_version, verdict=decision.reason,
        features=features_of(ev, baseline=baseline, previous=previous, window=window),
        prediction=prediction_of(ev, baseline=baseline, previous=previous, window=window),
        share=_finite(ev.share), thresholds=thresholds_of(rules), window=index, rows=ev.rows,
        report_url=page_url(base_url, model=model, id=ident), sample_path=sample_path,
        digest=digest, policy_verdict=decision.verdict.value,
        why_not_reverted=why_not_reverted(decision, rules),
        fit_current=_finite(ev.fit_current), fit_previous=_finite(ev.fit_previous),
        streak=decision.streak, needed=decision.needed,
        distributions=distributions_of(
            baseline=baseline, previous=previous, window=window,
            serving_label="reverted baseline" if reverting else "serving baseline",
            previous_label="restored baseline" if reverting else "previous baseline",
        ),
        evidently_file=f"{ident}.evidently.html" if kind in (Kind.ALERT, Kind.REVERT) else None,
    )


def of_rollout(*, kind: Kind, model: str, at: float, version: str | None,
               previous_version: str | None, verdict: str, digest: str | None,
               base_url: str | None) -> Decision:
    """The record of a deploy, a hold or a rollout step."""
    if kind not in (Kind.DEPLOY, Kind.HOLD, Kind.STEP):
        raise ValueError(f"a {kind.value} is not a rollout decision")
    ident = make_id(model=model, kind=kind, at=at, version=version)
    return Decision(id=ident, model=model, kind=kind, at=at, version=version,
                    previous_version=previous_version, verdict=verdict, digest=digest,
                    report_url=page_url(base_url, model=model, id=ident))
