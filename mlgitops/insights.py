"""Read a model's history into pandas, for notebooks: decisions, drift per feature, reverts.

Everything here reads what the controller and Git already recorded; nothing is recomputed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops.adapters import files, git
from mlgitops.core import layout


def _state(repo: str | Path) -> Path:
    return Path(repo).expanduser().resolve() / layout.STATE_DIR


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
