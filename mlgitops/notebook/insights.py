"""Read a model's history into pandas, for notebooks: decisions, drift per feature, reverts.

Everything here reads what the controller and Git already recorded; nothing is recomputed.
`decision_records` / `decisions` read the controller's decision log (through its index: pass
``limit`` for the newest only), `decision_url` says where a
decision's page is (the URL it was recorded with, the running gateway's, or the page file), and
`decision_page` is that page's HTML (for ``IPython.display.HTML``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops import settings
from mlgitops.adapters import decision_index, files, git
from mlgitops.core import decision_page as page_mod
from mlgitops.core import decisions as decisions_mod
from mlgitops.core import layout

REPORTS = "reports"


def _state(repo: str | Path) -> Path:
    return settings.state_dir(Path(repo))


def events(repo: str | Path, name: str | None = None) -> pd.DataFrame:
    """Every controller event (deploys, drift windows, alerts, reverts), oldest first."""
    rows = [e for e in files.read_jsonl(_state(repo) / "events.jsonl")
            if name is None or e.get("model") == name]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def drift_history(repo: str | Path, name: str) -> pd.DataFrame:
    """One row per closed drift window and feature: score, threshold, method, drifted.

    The prediction's drift appears as the feature ``prediction``.
    """
    out: list[dict[str, Any]] = []
    for e in files.read_jsonl(_state(repo) / "events.jsonl"):
        if e.get("model") != name or e.get("type") != "DriftWindow":
            continue
        when = pd.Timestamp(dt.datetime.fromtimestamp(float(e["closedAt"]), dt.UTC))
        for col in e.get("columns") or ():
            out.append({"time": when, "version": e.get("commit"), "feature": col["column"],
                        "method": col["method"], "score": col["score"],
                        "threshold": col["threshold"], "drifted": col["drifted"],
                        "verdict": e.get("verdict")})
        if e.get("predictionScore") is not None:
            out.append({"time": when, "version": e.get("commit"), "feature": "prediction",
                        "method": e.get("predictionMethod"), "score": e["predictionScore"],
                        "threshold": e.get("predictionThreshold"),
                        "drifted": e.get("predictionDrifted"), "verdict": e.get("verdict")})
    return pd.DataFrame(out, columns=["time", "version", "feature", "method", "score",
                                      "threshold", "drifted", "verdict"])


def reverts(repo: str | Path, name: str) -> pd.DataFrame:
    """Revert commits of ``name`` on the remote branch, with the commit they reverted and report."""
    root = Path(repo).expanduser().resolve()
    git.fetch(root)
    rows = []
    for e in git.log(root, f"origin/{layout.BRANCH}", layout.model_paths(name)):
        if layout.TRAILER_REVERTS not in e.trailers:
            continue
        report = e.trailers.get(layout.TRAILER_REPORT)
        rows.append({
            "commit": e.commit,
            "time": pd.Timestamp(dt.datetime.fromtimestamp(e.timestamp, dt.UTC)),
            "reverted": e.trailers[layout.TRAILER_REVERTS],
            "digest": e.trailers.get(layout.TRAILER_DIGEST),
            "report": (report if not report or "://" in report else str(root / report)),
            "subject": e.subject,
        })
    return pd.DataFrame(rows, columns=["commit", "time", "reverted", "digest", "report", "subject"])


def commit_message(repo: str | Path, commit: str) -> str:
    """The full message of ``commit`` (evidence and trailers of a revert)."""
    return git.text(Path(repo).expanduser().resolve(), "log", "-1", "--format=%B", commit)


def decision_records(repo: str | Path, name: str | None = None, *,
                     limit: int | None = None) -> list[decisions_mod.Decision]:
    """The recorded decisions (of ``name`` only when given; the newest ``limit`` when given),
    oldest first, from the log's index (`adapters.decision_index`)."""
    folder = _state(repo) / REPORTS
    flt = decision_index.Filter(model=name)
    if limit is None:
        return list(decision_index.each(folder, flt))
    return list(reversed(decision_index.page(folder, flt, limit=limit).decisions))


def decision_count(repo: str | Path, name: str | None = None) -> int:
    """How many decisions are recorded (of ``name`` only when given)."""
    return decision_index.total(_state(repo) / REPORTS, decision_index.Filter(model=name))


def decisions(repo: str | Path, name: str | None = None, *,
              limit: int | None = None) -> pd.DataFrame:
    """One row per decision (the newest ``limit`` when given), oldest first: time, kind, model,
    version, previous, commit, verdict, url."""
    rows = [{"time": pd.Timestamp(dt.datetime.fromtimestamp(d.at, dt.UTC)), "kind": d.kind.value,
             "model": d.model, "version": d.version, "previous": d.previous_version,
             "commit": d.commit, "verdict": d.verdict, "id": d.id,
             "url": decision_url(repo, d)}
            for d in decision_records(repo, name, limit=limit)]
    return pd.DataFrame(rows, columns=["time", "kind", "model", "version", "previous", "commit",
                                       "verdict", "id", "url"])


def page_path(repo: str | Path, d: decisions_mod.Decision) -> Path:
    return _state(repo) / REPORTS / d.model / f"{d.id}.html"


def decision_url(repo: str | Path, d: decisions_mod.Decision, *, gateway: str | None = None) -> str:
    """Where to open ``d``: its recorded URL, else the running ``gateway``'s, else its page file."""
    if d.report_url and d.report_url.startswith(("http://", "https://")):
        return d.report_url
    if gateway:
        return f"{gateway.rstrip('/')}{d.page_path}"
    return page_path(repo, d).as_uri()


def decision_page(repo: str | Path, name: str, ident: str | None = None, *,
                  kind: str | None = "revert") -> str:
    """The HTML page of decision ``ident`` of ``name`` (default: its latest of ``kind``).

    The page the controller wrote, else one rendered from the log. ValueError when there is none.
    """
    folder = _state(repo) / REPORTS
    d: decisions_mod.Decision | None
    if ident is not None:
        d = decision_index.find(folder, ident)
        d = d if d is not None and d.model == name else None
    else:
        kinds = None if kind is None else frozenset({decisions_mod.Kind(kind)})
        got = decision_index.page(folder, decision_index.Filter(model=name, kinds=kinds), limit=1)
        d = got.decisions[0] if got.decisions else None
    if d is None:
        what = f"decision {ident}" if ident else f"{kind or 'decision'} of {name}"
        raise ValueError(f"no {what} is recorded under {folder}")
    path = page_path(repo, d)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    history = [h for h in decision_index.windows(folder, model=name, version=d.version,
                                                 until=d.at, limit=50) if h.features]
    return page_mod.render(d, history=history or [d])
