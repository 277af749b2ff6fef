"""Decision pages on disk: the sink that writes ``<state>/reports/<model>/<decision id>.html``.

Pages are written for decisions that acted (deploy, hold, alert, revert); a quiet window's page
is rendered from the log when someone asks for it.

For each decision it reads from the controller's clone what Git says of the versions involved
(sha, author, date, subject, the manifest's digest), the earlier windows of the same version from
the decision log (the trend charts), renders `core.decision_page` and writes the page atomically.
The gateway (and the operator's port) serve it at ``/reports/<model>/<decision id>``; a page that
is missing is rendered from the log when asked for (`report_files.read`), and rewritten here when
the controller starts again (`rebuild_missing`).

May NOT: decide, or write anywhere but the reports directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from mlgitops import errors
from mlgitops.adapters import files, git, prediction_log, prediction_log_labels
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import performance
from mlgitops.core import decision_page, decisions, layout, manifest
from mlgitops.core.performance import page as performance_page


def page_file(reports_root: Path, model: str, ident: str) -> Path:
    return reports_root / model / f"{ident}.html"


def commit_info(clone: Path | None, sha: str, *, model: str) -> decision_page.Commit | None:
    """What Git says of ``sha`` in ``clone`` (None when the clone does not have it)."""
    if clone is None or not sha:
        return None
    try:
        out = git.text(clone, "log", "-1", "--format=%H%x00%an <%ae>%x00%cI%x00%s", sha, "--")
    except errors.MlgitopsError:
        return None
    fields = out.strip().split("\x00")
    if len(fields) != 4:
        return None
    digest: str | None = None
    with contextlib.suppress(errors.MlgitopsError, yaml.YAMLError, ValueError, TypeError):
        raw = git.show(clone, sha, layout.manifest_path(model))
        if raw is not None:
            digest = manifest.parse(yaml.safe_load(raw), source=layout.manifest_path(model)).digest
    return decision_page.Commit(sha=fields[0], author=fields[1], date=fields[2], subject=fields[3],
                                digest=digest)


def render(reports_root: Path, decision: decisions.Decision, *, clone: Path | None) -> str:
    """The page of ``decision`` with what the clone and the decision log know."""
    commits: dict[str, decision_page.Commit] = {}
    for sha in (decision.version, decision.previous_version, decision.commit):
        if sha and sha not in commits:
            info = commit_info(clone, sha, model=decision.model)
            if info is not None:
                commits[sha] = info
    history = decision_log.window_history(reports_root, decision)
    if decision.features and not any(h.id == decision.id for h in history):
        history = [*history, decision]
    evidently = (decision.evidently_file is not None
                 and (reports_root / decision.model / decision.evidently_file).is_file())
    return decision_page.render(decision, commits=commits, history=history,
                                evidently_available=evidently, index_href="./",
                                extra_html=performance_section(reports_root, decision))


def performance_section(reports_root: Path, decision: decisions.Decision) -> str:
    """The realized (and estimated) performance of the decision's versions, from the labels
    back so far (issue 20); "" when nothing is kept or it cannot be read."""
    state = reports_root.parent
    try:
        perf = performance.measure(
            decision.model, prediction_log.Directory(state / performance.STATS),
            prediction_log_labels.Labels(state / performance.LABELS), window_seconds=None)
    except errors.MlgitopsError:
        return ""
    return performance_page.section(perf.overall,
                                    versions=(decision.version, decision.previous_version))


class Pages:
    """`decisions.Sink`: writes each decision's page under ``reports_root``."""

    replays = True
    """Run again for recorded decisions whose page is missing."""

    def __init__(self, reports_root: Path, *, clone: Callable[[], Path | None]) -> None:
        self.root = reports_root
        self.clone = clone

    def record(self, decision: decisions.Decision) -> None:
        if decision.kind is decisions.Kind.PASS:
            return  # quiet windows are many: their pages are rendered when asked for
        if not manifest.valid_name(decision.model) or not decisions.valid_id(decision.id):
            raise errors.ReportError(f"{decision.id!r} is not a decision id of a valid model name")
        page = render(self.root, decision, clone=self.clone())
        files.write_atomic(page_file(self.root, decision.model, decision.id), page.encode())


def missing(reports_root: Path,
            records: Iterable[decisions.Decision] | None = None) -> list[decisions.Decision]:
    """Recorded decisions whose page file is not there (e.g. the reports were deleted).

    Reads only the decisions that have pages (not the quiet windows) from the index."""
    if records is None:
        records = decision_log.each_acted(reports_root)
    return [d for d in records
            if d.kind is not decisions.Kind.PASS
            and manifest.valid_name(d.model) and decisions.valid_id(d.id)
            and not page_file(reports_root, d.model, d.id).exists()]
