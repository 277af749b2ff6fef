"""The Evidently workspace as a drift trend: one snapshot per closed window, dashboards, retention.

One Evidently project per model. Every closed window of the drift monitor (pass, breach, alert,
revert) becomes a DataDriftPreset snapshot of the window's own rows (up to
`stats_store.WINDOW_SAMPLE_ROWS` of them) against the serving version's reference sample, its
share of drifted columns over the features only and the prediction a metric of its own, as the
decision counts them (`evidently_reports.SHARE_NOTE`), stamped with the window's close time, tagged ``mlgitops:window``,
``model=…``, ``version=<12 hex>``, ``verdict=…`` and carrying the decision's numbers as
metadata. The project's dashboard is laid out by mlgitops (panel ids derived from the project
and the panel's key, so writing it again changes nothing): a trend tab (share of drifted
features, drift score per feature), one panel per version, one per verdict. Retention keeps the
newest ``keep`` snapshots of a project (snapshot ids are UUIDv7: their order is their age).

Writes hold `evidently_reports.workspace_lock`, shared with the revert reports' child, so two
processes never create the same project twice. Evidently errors become `ReportError`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops.adapters import evidently_reports
from mlgitops.core import drift
from mlgitops.core.stats import ColumnKind
from mlgitops.errors import ReportError

WINDOW_TAG = "mlgitops:window"
SHARE = "evidently:metric_v2:DriftedColumnsCount"
SCORE = "evidently:metric_v2:ValueDrift"
TREND_TAB = "Drift trend"
VERSIONS_TAB = "Versions"
VERDICTS_TAB = "Verdicts"


@dataclass(frozen=True)
class Window:
    """One closed window to store: whose, which version, what was decided, when."""

    model: str
    version: str
    verdict: str
    at: float
    """Close time (seconds since the epoch): the snapshot's timestamp on the dashboard."""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def tags(self) -> list[str]:
        # the UI's list shows the first two tags: the ones a person scans for come first
        return [f"version={self.version[:12]}", f"verdict={self.verdict}", f"model={self.model}",
                WINDOW_TAG]


@dataclass(frozen=True)
class Added:
    project_id: str
    run_id: str
    pruned: tuple[str, ...]
    kept: int


@dataclass(frozen=True)
class StoredSnapshot:
    id: str
    timestamp: dt.datetime
    tags: tuple[str, ...]
    metadata: Mapping[str, str]


def warm_up() -> None:
    """Import what `add_window` needs (seconds), e.g. in a worker before its first window."""
    with evidently_reports.translated("Importing Evidently"):
        import evidently.presets
        import evidently.sdk.panels
        import evidently.ui.workspace  # noqa: F401


def _panel_id(project_id: str, key: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mlgitops:{project_id}:{key}")


def _panels(model: str, project_id: str, *, features: Sequence[str], versions: Sequence[str],
            verdicts: Sequence[str], keep: int) -> list[tuple[str, str, Any]]:
    """The dashboard mlgitops wants: (tab, key, panel) in display order."""
    from evidently.sdk import panels
    from evidently.sdk.models import PanelMetric

    def share(tags: list[str], legend: str = "share of drifted features") -> Any:
        return PanelMetric(legend=legend, metric=SHARE, metric_labels={"value_type": "share"},
                           tags=tags)

    def scores(tags: list[str]) -> list[Any]:
        return [PanelMetric(legend=f, metric=SCORE, metric_labels={"column": f}, tags=tags)
                for f in features]

    window = [WINDOW_TAG]
    out: list[tuple[str, str, Any]] = [
        (TREND_TAB, "about", panels.text_panel(
            title=f"{model}: live data against the serving version's reference, window by window",
            description=(f"One snapshot per closed window of the mlgitops drift monitor (pass, "
                         f"breach, alert, revert), from the window's own rows; the newest {keep} "
                         f"are kept. The {evidently_reports.SHARE_NOTE}. Snapshot tags: "
                         "version=<commit>, verdict=<pass|breach|alert|revert>."))),
        (TREND_TAB, "share", panels.line_plot_panel(
            title="Share of drifted features per window", values=[share(window)])),
        (TREND_TAB, "scores", panels.line_plot_panel(
            title="Drift score per feature", values=scores(window),
            description="Evidently's per-column drift score (K-S p-value, Wasserstein, …)")),
    ]
    for version in versions:
        tags = [WINDOW_TAG, f"version={version}"]
        out.append((VERSIONS_TAB, f"version:{version}", panels.line_plot_panel(
            title=f"Version {version}: share of drifted features and drift score per feature",
            values=[share(tags), *scores(tags)],
            description=f"windows while commit {version} served")))
    for verdict in verdicts:
        tags = [WINDOW_TAG, f"verdict={verdict}"]
        out.append((VERDICTS_TAB, f"verdict:{verdict}", panels.bar_plot_panel(
            title=f"Windows with verdict {verdict}: share of drifted features",
            values=[share(tags, legend=verdict)])))
    return out


def _known(dashboard: Any) -> tuple[list[str], list[str], list[str]]:
    """Features, versions and verdicts the current dashboard already shows."""
    features: list[str] = []
    versions: list[str] = []
    verdicts: list[str] = []
    for panel in dashboard.panels:
        for value in panel.values:
            column = value.metric_labels.get("column")
            if value.metric == SCORE and column and column not in features:
                features.append(column)
            for tag in value.tags:
                key, _, rest = tag.partition("=")
                if key == "version" and rest not in versions:
                    versions.append(rest)
                if key == "verdict" and rest not in verdicts:
                    verdicts.append(rest)
    return features, versions, verdicts


def ensure_dashboard(workspace: Any, project_id: str, *, model: str, features: Sequence[str],
                     version: str, verdict: str, keep: int) -> bool:
    """Lay out the project's dashboard; write it only when a feature, version or verdict is new.

    Panels mlgitops did not make are kept. True when the dashboard was written.
    """
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    current = workspace.get_dashboard(project_id)
    f0, v0, d0 = _known(current)
    ours_before = {_panel_id(project_id, "about")} & {p.id for p in current.panels}
    want_f = f0 + [f for f in features if f not in f0]
    want_v = v0 + ([version] if version not in v0 else [])
    want_d = d0 + ([verdict] if verdict not in d0 else [])
    if ours_before and (want_f, want_v, want_d) == (f0, v0, d0):
        return False
    layout = _panels(model, project_id, features=want_f, versions=want_v, verdicts=want_d,
                     keep=keep)
    ours = {_panel_id(project_id, key) for _, key, _ in layout}
    foreign = [p for p in current.panels if p.id not in ours]
    tabs: dict[str, list[uuid.UUID]] = {}
    built = []
    for tab, key, panel in layout:
        panel.id = _panel_id(project_id, key)
        built.append(panel)
        tabs.setdefault(tab, []).append(panel.id)
    tab_models = [DashboardTabModel(id=_panel_id(project_id, f"tab:{t}"), title=t, panels=ids)
                  for t, ids in tabs.items()]
    foreign_ids = {p.id for p in foreign}
    tab_models += [
        DashboardTabModel(id=t.id, title=t.title, panels=[p for p in t.panels if p in foreign_ids])
        for t in current.tabs
        if t.title not in tabs and any(p in foreign_ids for p in t.panels)
    ]
    workspace.save_dashboard(project_id, DashboardModel(tabs=tab_models, panels=built + foreign))
    return True


def _project(workspace: Any, model: str) -> Any:
    found = [p for p in workspace.search_project(model) if p.name == model]
    if found:
        return found[0]
    return workspace.create_project(
        model, description=f"mlgitops drift windows, reports and reverts of model {model}")


def add_window(
    workspace_dir: Path,
    *,
    window: Window,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: Mapping[str, ColumnKind],
    keep: int,
    share: float = 0.5,
) -> Added:
    """Store one closed window as a snapshot, update the dashboard, drop the oldest beyond ``keep``."""
    if keep < 1:
        raise ReportError(f"keep={keep}: the workspace must keep at least one snapshot per model")
    if current.empty:
        raise ReportError(f"the window of {window.model} at {window.version[:12]} has no sampled "
                          "live rows; nothing to compare")
    usable = {c: k for c, k in kinds.items() if c in reference.columns and c in current.columns}
    if not usable:
        raise ReportError(f"the live sample and the reference sample of {window.model} share "
                          "no columns")
    cols = list(usable)
    snapshot = evidently_reports.run_drift(
        reference[cols].reset_index(drop=True), current[cols].reset_index(drop=True),
        kinds=usable, name=f"{window.model} {window.version[:12]} {window.verdict}",
        tags=window.tags,
        metadata={"model": window.model, "version": window.version, "verdict": window.verdict,
                  "shareCounts": evidently_reports.SHARE_NOTE, **window.metadata},
        timestamp=dt.datetime.fromtimestamp(window.at, dt.UTC).replace(tzinfo=None),
        share=share,
    )
    with evidently_reports.translated(f"Adding a window of {window.model} to the Evidently "
                                      f"workspace {workspace_dir}"):
        from evidently.ui.workspace import Workspace

        with evidently_reports.workspace_lock(workspace_dir):
            workspace = Workspace(str(workspace_dir))
            project = _project(workspace, window.model)
            project_id = str(project.id)
            ensure_dashboard(workspace, project_id, model=window.model, features=cols,
                             version=window.version[:12], verdict=window.verdict, keep=keep)
            ref = workspace.add_run(project.id, snapshot)
            runs = sorted(str(r) for r in workspace.list_runs(project.id))
            pruned = tuple(runs[: max(0, len(runs) - keep)])
            for run_id in pruned:
                workspace.delete_run(project.id, run_id)
    return Added(project_id, str(ref.id), pruned, len(runs) - len(pruned))


def snapshots(workspace_dir: Path, *, model: str) -> list[StoredSnapshot]:
    """The snapshots of ``model``'s project, oldest first ([] when there is no project)."""
    with evidently_reports.translated(f"Reading the Evidently workspace {workspace_dir}"):
        from evidently.ui.workspace import Workspace

        if not workspace_dir.is_dir():
            return []
        workspace = Workspace(str(workspace_dir))
        found = [p for p in workspace.search_project(model) if p.name == model]
        if not found:
            return []
        out = []
        for run_id in sorted(str(r) for r in workspace.list_runs(found[0].id)):
            snap = workspace.get_run(found[0].id, run_id)
            if snap is not None:
                out.append(StoredSnapshot(run_id, snap.timestamp, tuple(snap.tags),
                                          {str(k): str(v) for k, v in snap.metadata.items()}))
        return out


def window_verdicts(workspace_dir: Path, *, model: str, decision_id: str,
                    kinds: Mapping[str, ColumnKind], share: float = 0.5) -> drift.DriftReport | None:
    """What the snapshot stored for decision ``decision_id`` says: Evidently's per-column verdicts,
    its share of drifted features, the prediction apart (None when no snapshot has that id)."""
    with evidently_reports.translated(f"Reading the Evidently workspace {workspace_dir}"):
        from evidently.ui.workspace import Workspace

        if not workspace_dir.is_dir():
            return None
        workspace = Workspace(str(workspace_dir))
        found = [p for p in workspace.search_project(model) if p.name == model]
        if not found:
            return None
        for run_id in sorted(str(r) for r in workspace.list_runs(found[0].id)):
            snap = workspace.get_run(found[0].id, run_id)
            if snap is not None and snap.metadata.get("decisionId") == decision_id:
                rows = int(str(snap.metadata.get("sampleRows") or 0))
                return evidently_reports.verdicts_of(snap, kinds=kinds, share=share, rows=rows,
                                                     reference_rows=0)
        return None


def dashboard(workspace_dir: Path, *, model: str) -> dict[str, list[str]]:
    """Tab title -> panel titles of ``model``'s project dashboard ({} when there is none)."""
    with evidently_reports.translated(f"Reading the Evidently workspace {workspace_dir}"):
        from evidently.ui.workspace import Workspace

        if not workspace_dir.is_dir():
            return {}
        workspace = Workspace(str(workspace_dir))
        found = [p for p in workspace.search_project(model) if p.name == model]
        if not found:
            return {}
        model_ = workspace.get_dashboard(found[0].id)
        titles = {p.id: p.title for p in model_.panels}
        return {str(t.title): [titles[p] for p in t.panels if p in titles] for t in model_.tabs}
