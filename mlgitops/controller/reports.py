"""Drift reports for people: the live reservoir sample against the version's reference sample.

Reports are Evidently reports (HTML + snapshot JSON + summary) kept under
``<state>/reports/<name>/`` and added to the Evidently workspace
``<state>/workspace`` (one project per model; ``<state>`` is ``<repo>/.git/mlgitops``), so
``evidently ui --workspace <repo>/.git/mlgitops/workspace`` shows their history. A report's path is decided (`plan`) before
it is built, so a revert commit can link it: the link is the URL where the controller's
gateway serves it (`Plan.url`: ``{base}/reports/{name}/{file}``). Building happens later, in
the background, and its failure never blocks anything (`ReportError`); a revert's report that
cannot be built is replaced by a page saying why (`write_placeholder`), and one that is missing
after a crash is rebuilt when the controller starts again (`plan_for_link`). The HTML appears
only once complete (written aside, then renamed into place).

``build_report(repo, name)`` is what ``mlgitops report NAME`` runs. The drift monitor builds
its reports with `build_isolated`: in a child process at low CPU priority
(``python -m mlgitops.controller.reports``), so Evidently's import and computation never
compete with the gateway, the reconciler or the next revert for the controller's interpreter.
"""

from __future__ import annotations

import ctypes
import html as html_mod
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlgitops import errors, settings
from mlgitops.adapters import evidently_reports, files, git, stats_store
from mlgitops.controller import state as state_mod
from mlgitops.core import clock, decisions, layout, manifest, stats
from mlgitops.core.stats import ColumnKind

REPORTS = "reports"
WORKSPACE = "workspace"
PREDICTION = "prediction"


@dataclass(frozen=True)
class Plan:
    """Where one report will be written (decided before it is built)."""

    name: str
    version: str
    out_dir: Path
    title: str
    why: str

    @property
    def html(self) -> Path:
        return self.out_dir / f"{self.title}.html"

    @property
    def snapshot(self) -> Path:
        return self.out_dir / f"{self.title}.snapshot.json"

    def link(self, repo: Path) -> str:
        """The HTML path relative to the repository root."""
        try:
            return self.html.relative_to(repo).as_posix()
        except ValueError:
            return str(self.html)

    def url(self, base: str) -> str:
        """Where the gateway at ``base`` serves the HTML (what a revert commit links)."""
        return f"{base.rstrip('/')}/{REPORTS}/{self.name}/{self.html.name}"


@dataclass(frozen=True)
class Built:
    plan: Plan
    paths: evidently_reports.ReportPaths
    run_id: str | None
    workspace_error: str | None
    rows: int
    reference_rows: int
    seconds: float


def reports_dir(state_dir: Path, name: str) -> Path:
    return state_dir / REPORTS / name


def workspace_dir(state_dir: Path) -> Path:
    return state_dir / WORKSPACE


def plan(state_dir: Path, *, name: str, version: str, now: float, why: str,
         title: str | None = None) -> Plan:
    """A fresh, unique report location for ``name`` at ``version`` (``why``: revert, alert, …).

    ``title``: the file name without ``.html`` (a decision's report is ``<decision id>.evidently``).
    """
    stamp = clock.compact(now, ms=True) + "Z"
    safe_why = re.sub(r"[^a-z0-9-]+", "-", why.lower()).strip("-") or "report"
    out = reports_dir(state_dir, name)
    if title is not None:
        return Plan(name=name, version=version, out_dir=out, title=title, why=safe_why)
    title = f"{stamp}-{version[:12]}-{safe_why}"
    n = 1
    candidate = title
    while (out / f"{candidate}.html").exists():
        n += 1
        candidate = f"{title}-{n}"
    return Plan(name=name, version=version, out_dir=out, title=candidate, why=safe_why)


_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.html")


def plan_for_link(state_dir: Path, link: str, *, name: str, version: str) -> Plan | None:
    """The Evidently report a revert commit links (URL or repository-relative path), when ours.

    ``.../reports/<name>/<decision id>`` (a decision page: its Evidently report is
    ``<id>.evidently.html`` beside it) or ``.../reports/<name>/<file>.html`` of model ``name``
    map to a file of this state directory; anything else (another host's path, a path trick)
    is None.
    """
    path = urllib.parse.urlsplit(link).path if "://" in link else link
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[-3] != REPORTS or parts[-2] != name:
        return None
    file = parts[-1]
    page = file.removesuffix(".html")
    if decisions.valid_id(page) and manifest.valid_name(name):
        return Plan(name=name, version=version, out_dir=reports_dir(state_dir, name),
                    title=f"{page}.evidently", why="revert")
    if not manifest.valid_name(name) or not _FILE.fullmatch(file) or ".." in file:
        return None
    title = file[: -len(".html")]
    return Plan(name=name, version=version, out_dir=reports_dir(state_dir, name), title=title,
                why="revert")


def write_placeholder(target: Plan, *, reason: str, details: Mapping[str, Any]) -> Path:
    """A page at ``target.html`` saying the report could not be built, why, and the numbers."""
    rows = "".join(
        f"<tr><th>{html_mod.escape(str(k))}</th><td>{html_mod.escape(str(v))}</td></tr>"
        for k, v in details.items()
    )
    page = (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html_mod.escape(target.title)}</title>"
        f"<h1>Drift report of {html_mod.escape(target.name)} at "
        f"{html_mod.escape(target.version[:12])}</h1>"
        f"<p>The Evidently report could not be built: {html_mod.escape(reason)}</p>"
        "<p>The decision's numbers are below; run <code>mlgitops report "
        f"{html_mod.escape(target.name)} --repo REPO</code> for a report of the live data "
        "now.</p>"
        f"<table>{rows}</table>\n"
    )
    target.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.out_dir / f".{target.title}.placeholder.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target.html)
    return target.html


def read_at(clone: Path, commit: str, path: str) -> bytes:
    try:
        raw = git.show(clone, commit, path)
    except errors.ModelError as exc:  # over the size cap: not read
        raise errors.ReportError(str(exc)) from exc
    if raw is None:
        raise errors.ReportError(f"{path} does not exist at {commit[:12]}; republish the model")
    return raw


def reference_frame(clone: Path, *, name: str, version: str) -> pd.DataFrame:
    """The version's reference sample (``models/<name>/reference.parquet``) from Git."""
    raw = read_at(clone, version, f"{layout.model_path(name)}/{layout.REFERENCE}")
    try:
        files.check_parquet(raw, name=f"{layout.model_path(name)}/{layout.REFERENCE}")
        return pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises many types
        raise errors.ReportError(f"cannot read the reference sample of {name} ({exc})") from exc


def baseline_at(clone: Path, *, name: str, version: str) -> stats.Baseline:
    raw = read_at(clone, version, f"{layout.model_path(name)}/{layout.BASELINE}")
    try:
        return stats.Baseline.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.ReportError(f"the baseline of {name} at {version[:12]} is invalid ({exc})") from exc


def kinds_of(baseline: stats.Baseline) -> dict[str, ColumnKind]:
    out: dict[str, ColumnKind] = {c.name: c.kind for c in baseline.columns}
    if baseline.prediction is not None:
        out[PREDICTION] = baseline.prediction.kind
    return out


def build(
    target: Plan,
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: Mapping[str, ColumnKind],
    workspace: Path | None,
    tags: Mapping[str, str] | None = None,
) -> Built:
    """Write the report planned in ``target``; ReportError when Evidently cannot build it."""
    import time

    start = time.perf_counter()
    if current.empty:
        raise errors.ReportError(
            f"no live rows were recorded for {target.name} at {target.version[:12]} yet; "
            "send traffic, then build the report"
        )
    usable = {c: k for c, k in kinds.items() if c in reference.columns and c in current.columns}
    if not usable:
        raise errors.ReportError(
            f"the live sample and the reference sample of {target.name} share no columns"
        )
    cols = list(usable)
    all_tags = {"model": target.name, "version": target.version, "why": target.why, **(tags or {})}
    target.out_dir.mkdir(parents=True, exist_ok=True)
    # written aside, then renamed into place (the HTML last): a link never shows half a report
    aside = Path(tempfile.mkdtemp(prefix=f".{target.title}.", dir=target.out_dir))
    try:
        written = evidently_reports.write_report(
            reference[cols].reset_index(drop=True),
            current[cols].reset_index(drop=True),
            out_dir=aside,
            title=target.title,
            tags=all_tags,
            kinds=usable,
        )
        paths = evidently_reports.ReportPaths(
            html=target.out_dir / written.html.name,
            snapshot=target.out_dir / written.snapshot.name,
            summary=target.out_dir / written.summary.name,
        )
        os.replace(written.snapshot, paths.snapshot)
        os.replace(written.summary, paths.summary)
        os.replace(written.html, paths.html)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    run_id: str | None = None
    ws_error: str | None = None
    if workspace is not None:
        try:
            run_id = evidently_reports.add_to_workspace(
                workspace, project=target.name, snapshot_path=paths.snapshot
            )
        except errors.ReportError as exc:
            ws_error = str(exc)
    return Built(target, paths, run_id, ws_error, len(current), len(reference),
                 time.perf_counter() - start)


def live_sample(stats_root: Path, *, name: str, version: str) -> pd.DataFrame:
    """The merged reservoir sample the servers of ``name`` at ``version`` recorded."""
    snap = stats_store.read(stats_root / name / version, version=version)
    return snap.sample


def build_for(
    state_dir: Path,
    clone: Path,
    *,
    name: str,
    version: str,
    target: Plan,
    sample: pd.DataFrame | None = None,
    tags: Mapping[str, str] | None = None,
) -> Built:
    """Build the planned report of ``name`` at ``version`` from Git and the stats directory."""
    current = sample if sample is not None else live_sample(
        state_dir / "stats", name=name, version=version
    )
    baseline = baseline_at(clone, name=name, version=version)
    return build(
        target,
        reference=reference_frame(clone, name=name, version=version),
        current=current,
        kinds=kinds_of(baseline),
        workspace=workspace_dir(state_dir),
        tags=tags,
    )


def build_isolated(
    state_dir: Path,
    clone: Path,
    *,
    name: str,
    version: str,
    target: Plan,
    sample: pd.DataFrame | None = None,
    tags: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> Built:
    """`build_for` in a child process at low CPU priority; ReportError with its reason."""
    import time

    start = time.perf_counter()
    target.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sample-", dir=target.out_dir) as tmp:
        args = {
            "stateDir": str(state_dir), "clone": str(clone), "name": name, "version": version,
            "outDir": str(target.out_dir), "title": target.title, "why": target.why,
            "tags": dict(tags or {}), "sample": None,
        }
        if sample is not None and not sample.empty:
            path = Path(tmp) / "sample.parquet"
            try:
                sample.to_parquet(path, index=False)
                args["sample"] = str(path)
            except Exception:  # an odd column type: let the child read the stats directory
                args["sample"] = None
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "mlgitops.controller.reports"],
                input=json.dumps(args).encode(), capture_output=True, timeout=timeout,
                env={**os.environ, "DO_NOT_TRACK": "true"}, preexec_fn=_lower_priority,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise errors.ReportError(f"the report process failed ({exc})") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise errors.ReportError(" ".join(tail) or f"the report process exited {proc.returncode}")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    paths = evidently_reports.ReportPaths(Path(out["html"]), Path(out["snapshot"]),
                                          Path(out["summary"]))
    return Built(target, paths, out.get("runId"), out.get("workspaceError"), int(out["rows"]),
                 int(out["referenceRows"]), time.perf_counter() - start)


def _lower_priority() -> None:
    """In the report child: low CPU priority, and die with the controller (no orphan builds)."""
    os.nice(10)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child() -> int:
    """``python -m mlgitops.controller.reports``: one JSON request on stdin, one JSON line out."""
    args = json.loads(sys.stdin.read())
    target = Plan(name=args["name"], version=args["version"], out_dir=Path(args["outDir"]),
                  title=args["title"], why=args["why"])
    sample = pd.read_parquet(args["sample"]) if args.get("sample") else None
    try:
        built = build_for(Path(args["stateDir"]), Path(args["clone"]), name=target.name,
                          version=target.version, target=target, sample=sample, tags=args["tags"])
    except errors.MlgitopsError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps({
        "html": str(built.paths.html), "snapshot": str(built.paths.snapshot),
        "summary": str(built.paths.summary), "runId": built.run_id,
        "workspaceError": built.workspace_error, "rows": built.rows,
        "referenceRows": built.reference_rows,
    }))
    return 0


def _served(state_dir: Path, name: str) -> str | None:
    store = state_mod.Store(state_dir)
    st = store.models.get(name)
    if st is not None and st.served_commit:
        return st.served_commit
    record: dict[str, Any] | None = store.backends.get(name)
    if record and record.get("version"):
        return str(record["version"])
    return None


def build_report(repo: Path, name: str) -> Path:
    """``mlgitops report NAME``: a report of the serving version now; returns its HTML path."""
    import time

    root = repo.resolve()
    state_dir = settings.state_dir(root)
    version = _served(state_dir, name)
    if version is None:
        stats_dir = state_dir / "stats" / name
        dirs = sorted((p for p in stats_dir.iterdir() if p.is_dir()),
                      key=lambda p: p.stat().st_mtime) if stats_dir.is_dir() else []
        if not dirs:
            raise errors.ConfigError(
                f"model {name!r} has no live statistics under {stats_dir}; run `mlgitops up "
                f"--repo {root}` and send it traffic first"
            )
        version = dirs[-1].name
    clone = state_dir / "source.git"
    if not (clone / "HEAD").exists() or git.rev_parse(clone, version) is None:
        clone = root
    target = plan(state_dir, name=name, version=version, now=time.time(), why="on-demand")
    return build_for(state_dir, clone, name=name, version=version, target=target).plan.html


if __name__ == "__main__":
    raise SystemExit(_child())
