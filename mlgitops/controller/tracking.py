"""Evidently and MLflow as decision sinks, each doing its work in a low-priority child process.

- `EvidentlySink`: every closed window (pass, breach, alert, revert) becomes a snapshot in the
  Evidently workspace ``<state>/workspace`` (`adapters.evidently_workspace`: one project per
  model, its dashboard, the newest ``keep`` snapshots kept), from the window's own rows (the
  parquet the dispatcher wrote) against the serving version's reference sample in Git.
- `MlflowSink`: every decision becomes a run; a deploy registers the version (by content digest)
  and moves the alias ``production`` to it; a revert that landed moves the alias to the restored
  version at once (`adapters.mlflow_tracking`). The tracking URI defaults to
  ``sqlite:///<state>/mlflow.db`` with artifacts under ``<state>/mlartifacts``.

Evidently and MLflow take seconds to import and compute, so neither ever runs in the
controller's interpreter: each sink talks to a ``python -m mlgitops.controller.tracking`` child
(niced, dying with the controller; JSON lines in and out, its log in
``<state>/tracking/<sink>.log``), started when there is a decision to record, restarted after
a crash or a timeout, and stopped once idle for ``idle`` seconds (`settings.TrackingSettings`,
``MLGITOPS_TRACKING_IDLE_SECONDS``): an idle sink holds no memory (each child is 200+ MB with
its library imported), and a decision after a quiet spell is recorded a few seconds later (the
child's start). ``record`` raises a `Transient` error on failure, so the dispatcher retries it;
it never blocks a deploy or a revert, which happen on other threads.

A run's report artifacts (the decision page, the full Evidently report) may be built after the
decision is recorded: missing ones are added when the next decision of the sink is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from mlgitops import errors, ui
from mlgitops.adapters import clock as system_clock
from mlgitops.adapters import evidently_performance, evidently_workspace, git, mlflow_tracking
from mlgitops.controller import feedback, reports
from mlgitops.core import decisions, layout, manifest

EVIDENTLY = "evidently"
MLFLOW = "mlflow"
TRACKING_DIR = "tracking"
WINDOWS = frozenset(k for k in decisions.Kind if k.window)


def artifact_root(state_dir: Path) -> Path:
    return state_dir / mlflow_tracking.ARTIFACTS_DIR


class Worker:
    """One child process serving one sink: a JSON config line, then a decision per line."""

    def __init__(self, *, sink: str, state_dir: Path, config: Mapping[str, Any],
                 timeout: float = 300.0, idle: float | None = None) -> None:
        self.sink = sink
        self.state_dir = state_dir
        self.config = {"sink": sink, "stateDir": str(state_dir), **config}
        self.timeout = timeout
        self.idle = idle
        """Seconds without a call after which the child is stopped (None: never)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()
        self._used = time.monotonic()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        self.starts = 0
        self.idle_stops = 0
        self.last_pid: int | None = None
        """The pid of the child started last (it may have exited since)."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        log_dir = self.state_dir / TRACKING_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.sink}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlgitops.controller.tracking"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env={**os.environ, "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"},
                preexec_fn=reports._lower_priority,
            )
        self._replies = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout, self._replies),
                         name=f"{self.sink}-replies", daemon=True).start()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self.config).encode() + b"\n")
        proc.stdin.flush()
        self.starts += 1
        self.last_pid = proc.pid
        self._used = time.monotonic()
        if self.idle is not None and (self._reaper is None or not self._reaper.is_alive()):
            self._closed.clear()
            self._reaper = threading.Thread(target=self._reap, name=f"{self.sink}-idle",
                                            daemon=True)
            self._reaper.start()
        return proc

    def _reap(self) -> None:
        """Stop the child once no call came for ``idle`` seconds (the next call starts one)."""
        assert self.idle is not None
        tick = max(0.2, min(self.idle / 4, 5.0))
        while not self._closed.wait(tick):
            if self._proc is None or time.monotonic() - self._used < self.idle:
                continue
            if not self._lock.acquire(blocking=False):
                continue  # a call is under way
            try:
                if self._proc is not None and time.monotonic() - self._used >= self.idle:
                    self._stop()
                    self.idle_stops += 1
                    self._reaper = None  # the next start starts another
                    return
            finally:
                self._lock.release()

    @staticmethod
    def _read(stream: IO[bytes] | None, out: queue.Queue[bytes | None]) -> None:
        assert stream is not None
        for line in stream:
            out.put(line)
        out.put(None)

    def start(self) -> None:
        """Start the child now (it imports and opens its store while nothing waits for it)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            try:
                self._proc = self._start()
            except OSError as exc:
                raise errors.RuntimeFailure(f"the {self.sink} process could not start "
                                            f"({exc})") from exc
        return self._proc

    def call(self, decision: decisions.Decision) -> dict[str, Any]:
        """The child's answer for ``decision``; Transient when it failed, died or timed out."""
        with self._lock:
            proc = self._ensure()
            try:
                assert proc.stdin is not None
                proc.stdin.write(decision.to_json().encode() + b"\n")
                proc.stdin.flush()
                line = self._replies.get(timeout=self.timeout)
            except (OSError, queue.Empty) as exc:
                self._kill()
                raise errors.RuntimeFailure(
                    f"the {self.sink} process did not answer for {decision.id} within "
                    f"{self.timeout:.0f}s ({type(exc).__name__}); it is restarted on the next "
                    f"decision (log: {self.state_dir / TRACKING_DIR / self.sink}.log)") from exc
            if line is None:
                self._kill()
                raise errors.RuntimeFailure(
                    f"the {self.sink} process exited while recording {decision.id}; see "
                    f"{self.state_dir / TRACKING_DIR / self.sink}.log")
            self._used = time.monotonic()
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            kind = errors.ReportError if self.sink == EVIDENTLY else errors.TrackingError
            raise kind(str(reply.get("error") or "unknown error"))
        return reply

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the child (without waiting for a call in flight: shutdown must not hang)."""
        self._closed.set()
        self._stop()

    def _stop(self) -> None:
        """End the child's input (it finishes and exits); SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class EvidentlySink:
    """Closed windows -> Evidently snapshots (see the module docstring)."""

    def __init__(self, state_dir: Path, *, clone: Path, keep: int = 200,
                 timeout: float = 300.0, idle: float | None = None) -> None:
        if keep < 1:
            raise errors.ConfigError(f"keep={keep}: keep at least one Evidently snapshot per model")
        self.worker = Worker(sink=EVIDENTLY, state_dir=state_dir, timeout=timeout, idle=idle,
                             config={"clone": str(clone), "keep": keep})
        self.recorded: list[dict[str, Any]] = []
        """Recent replies (bounded): run ids, pruned counts (tests, the demo)."""

    def start(self) -> None:
        self.worker.start()

    def record(self, decision: decisions.Decision) -> None:
        if decision.kind not in WINDOWS or decision.version is None:
            return
        reply = self.worker.call(decision)
        self.recorded = [*self.recorded[-49:], reply]

    def close(self) -> None:
        self.worker.close()


class MlflowSink:
    """Every decision -> an MLflow run; deploys and reverts -> registry versions and the alias."""

    def __init__(self, state_dir: Path, *, clone: Path, uri: str | None = None,
                 timeout: float = 300.0, max_pending: int = 32,
                 pending_seconds: float = 900.0, idle: float | None = None) -> None:
        self.uri = uri or mlflow_tracking.default_uri(state_dir)
        self.worker = Worker(sink=MLFLOW, state_dir=state_dir, timeout=timeout, idle=idle,
                             config={"clone": str(clone), "uri": self.uri})
        self.max_pending = max_pending
        self.pending_seconds = pending_seconds
        self._pending: dict[str, tuple[decisions.Decision, float]] = {}
        self.recorded: list[dict[str, Any]] = []

    def start(self) -> None:
        self.worker.start()

    def record(self, decision: decisions.Decision) -> None:
        self._send(decision)
        for ident, (earlier, since) in list(self._pending.items()):
            if ident == decision.id:
                continue
            if time.monotonic() - since > self.pending_seconds:
                self._pending.pop(ident, None)
                continue
            with contextlib.suppress(errors.MlgitopsError):
                self._send(earlier)

    def _send(self, decision: decisions.Decision) -> None:
        reply = self.worker.call(decision)
        self.recorded = [*self.recorded[-49:], reply]
        if reply.get("pending"):
            since = self._pending.get(decision.id, (decision, time.monotonic()))[1]
            self._pending[decision.id] = (decision, since)
            while len(self._pending) > self.max_pending:
                self._pending.pop(next(iter(self._pending)))
        else:
            self._pending.pop(decision.id, None)

    def close(self) -> None:
        self.worker.close()


# ---------------------------------------------------------------------------------------------
# In the child process


def record_window(state_dir: Path, clone: Path, decision: decisions.Decision, *,
                  keep: int) -> dict[str, Any]:
    """Store one closed window in the Evidently workspace (runs in the child)."""
    import pandas as pd

    name, version = decision.model, decision.version
    if decision.kind not in WINDOWS or version is None:
        return {"skipped": f"a {decision.kind.value} is not a closed window"}
    sample = Path(decision.sample_path) if decision.sample_path else None
    source = "window"
    if sample is not None and sample.is_file():
        try:
            current = pd.read_parquet(sample)
        except Exception as exc:  # pyarrow raises many types
            raise errors.ReportError(f"cannot read the live sample {sample} ({exc})") from exc
    else:
        # no sample of this window (none recorded yet, or pruned): the version's reservoir
        source = "version"
        try:
            current = reports.live_sample(state_dir / "stats", name=name, version=version)
        except errors.MlgitopsError:
            current = pd.DataFrame()
        if current.empty:
            return {"skipped": f"no live sample of {name} at {version[:12]} was recorded for "
                               f"window {decision.window}"}
    baseline = reports.baseline_at(clone, name=name, version=version)
    metadata = {"decisionId": decision.id, "kind": decision.kind.value,
                "policyVerdict": decision.policy_verdict or "",
                "window": str(decision.window or ""), "rows": str(decision.rows or ""),
                "mlgitopsShare": "" if decision.share is None else f"{decision.share:.4f}",
                "previousVersion": decision.previous_version or "", "sample": source,
                "sampleRows": str(len(current)), "reportUrl": decision.report_url or ""}
    added = evidently_workspace.add_window(
        reports.workspace_dir(state_dir),
        window=evidently_workspace.Window(name, version, decision.kind.value, decision.at,
                                          {k: v for k, v in metadata.items() if v}),
        reference=reports.reference_frame(clone, name=name, version=version),
        current=current, kinds=reports.kinds_of(baseline), keep=keep,
        share=float(decision.thresholds.get("datasetShare", 0.5)),
    )
    out: dict[str, Any] = {"runId": added.run_id, "projectId": added.project_id,
                           "pruned": len(added.pruned), "kept": added.kept}
    labelled = feedback.version_rows(state_dir, name, version)  # labels back (issue 20)
    if labelled is not None:
        out["performanceRunId"] = evidently_performance.add_performance(
            reports.workspace_dir(state_dir), model=name, version=version, task=labelled[0],
            rows=labelled[1], classes=labelled[2], at=decision.at)
    return out


def _digest_at(clone: Path, model: str, commit: str) -> str:
    raw = git.show(clone, commit, layout.manifest_path(model))
    if raw is None:
        raise errors.TrackingError(f"{layout.manifest_path(model)} does not exist at {commit[:12]}")
    import yaml

    return manifest.parse(yaml.safe_load(raw), source=layout.manifest_path(model)).digest


def _register(tracker: mlflow_tracking.Tracker, clone: Path, *, model: str, commit: str,
              digest: str | None) -> mlflow_tracking.ModelVersion:
    """The registered version of ``model``'s content at ``commit`` (exported from Git if new)."""
    digest = digest or _digest_at(clone, model, commit)
    existing = tracker.version_of(model, digest)
    if existing is not None:
        if existing.tags.get(f"{mlflow_tracking.TAG}commit") != commit:
            tracker.tag_version(model, existing.version, {"restoredBy": commit})
        return existing
    dest = tracker.artifact_root / "models" / model / commit
    if not (dest / "MLmodel").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}.", dir=dest.parent))
        git.export(clone, commit, layout.model_path(model), aside)
        with contextlib.suppress(OSError):
            os.replace(aside, dest)
    entries = git.log(clone, commit, limit=1)
    description = f"commit {commit}, digest {digest}"
    if entries:
        description = f"{entries[0].subject} ({entries[0].author}); {description}"
    return tracker.ensure_version(model, commit=commit, digest=digest, source=dest,
                                  description=description)


def _report_files(state_dir: Path, decision: decisions.Decision,
                  scratch: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, artifact folder) of the decision's reports that exist, and what is still missing."""
    found: list[tuple[Path, str]] = []
    missing: list[str] = []
    record = scratch / "decision.json"
    record.write_text(json.dumps(decision.to_dict(), indent=2), encoding="utf-8")
    found.append((record, "report"))
    if decision.evidently_file:
        html = reports.reports_dir(state_dir, decision.model) / decision.evidently_file
        if html.is_file():
            found.append((html, "report"))
        else:
            missing.append(f"the Evidently report {html.name} is not built yet")
    url = decision.report_url
    if url and urllib.parse.urlsplit(url).scheme in ("http", "https"):
        import httpx

        try:
            r = httpx.get(url, timeout=5.0)
            if r.status_code == 200 and "html" in r.headers.get("content-type", ""):
                page = scratch / "decision-page.html"
                page.write_bytes(r.content)
                found.append((page, "report"))
            else:
                missing.append(f"the decision page {url} answered {r.status_code}")
        except httpx.HTTPError as exc:
            missing.append(f"the decision page {url} could not be read ({type(exc).__name__})")
    return found, missing


def record_mlflow(state_dir: Path, clone: Path, tracker: mlflow_tracking.Tracker,
                  decision: decisions.Decision) -> dict[str, Any]:
    """Registry, alias and run of one decision (runs in the child)."""
    d, model = decision, decision.model
    registered: mlflow_tracking.ModelVersion | None = None
    if d.kind is decisions.Kind.DEPLOY and d.version:
        registered = _register(tracker, clone, model=model, commit=d.version, digest=d.digest)
        tracker.set_alias(model, registered.version)
    elif d.kind is decisions.Kind.REVERT and d.commit and d.previous_version:
        # Git now names the previous content: production follows at once (the redeploy of the
        # revert commit finds the same version by digest)
        registered = _register(tracker, clone, model=model, commit=d.previous_version,
                               digest=d.previous_digest)
        tracker.tag_version(model, registered.version, {"restoredBy": d.commit})
        if d.digest:  # tagged before the alias moves: whoever sees it moved sees why
            reverted = tracker.version_of(model, d.digest)
            if reverted is not None:
                tracker.tag_version(model, reverted.version,
                                    {"quarantined": "true", "revertedBy": d.commit})
        tracker.set_alias(model, registered.version)
    tags = {f"{mlflow_tracking.TAG}{k}": v for k, v in {
        "model": model, "kind": d.kind.value, "verdict": d.policy_verdict or d.kind.value,
        "version": d.version or "", "previousVersion": d.previous_version or "",
        "commit": d.commit or "", "reportUrl": d.report_url or "",
        "modelVersion": registered.version if registered else "",
    }.items() if v}
    tags["mlflow.note.content"] = (d.verdict + (f"\n\nDecision page: {d.report_url}"
                                                if d.report_url else ""))
    params = {f"policy.{k}": str(v) for k, v in d.thresholds.items()}
    params.update({k: v for k, v in {
        "version": d.version, "previousVersion": d.previous_version, "commit": d.commit,
        "digest": d.digest, "previousDigest": d.previous_digest,
        "window": None if d.window is None else str(d.window),
    }.items() if v})
    metrics: dict[str, float] = {}
    for f in (*d.features, *((d.prediction,) if d.prediction else ())):
        if f.score is not None:
            metrics[f"drift.score.{f.name}"] = f.score
        metrics[f"drift.drifted.{f.name}"] = float(f.drifted)
        if f.restored is not None and f.restored.score is not None:
            metrics[f"restored.score.{f.name}"] = f.restored.score
    for key, value in {"drift.share": d.share, "rows": d.rows, "fit.current": d.fit_current,
                       "fit.previous": d.fit_previous, "streak": d.streak}.items():
        if value is not None:
            metrics[key] = float(value)
    if d.version:  # the version's realized performance from the labels back so far (issue 20)
        metrics.update(feedback.version_metrics(state_dir, model, d.version))
    scratch_root = state_dir / TRACKING_DIR
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".run-", dir=scratch_root) as tmp:
        files, missing = _report_files(state_dir, d, Path(tmp))
        run = tracker.log_run(
            model, decision_id=d.id,
            run_name=f"{d.kind.value} {(d.version or '')[:12]}".strip(), at=d.at,
            tags=tags, params=params, metrics=metrics, step=d.window or 0, artifacts=files)
    return {"runId": run.run_id, "created": run.created, "artifacts": list(run.artifacts),
            "modelVersion": registered.version if registered else None,
            "pending": missing}


def _child() -> int:
    """``python -m mlgitops.controller.tracking``: config line, then one decision per line."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to the log, not into the protocol
    config = json.loads(sys.stdin.readline())
    state_dir, clone = Path(config["stateDir"]), Path(config["clone"])
    tracker = None
    try:  # warm up before the first decision: imports, and the store's schema on first use
        if config["sink"] == MLFLOW:
            tracker = mlflow_tracking.Tracker(str(config["uri"]),
                                              artifact_root=artifact_root(state_dir))
            tracker.client.search_experiments(max_results=1)
        else:
            evidently_workspace.warm_up()
    except Exception as exc:  # reported again, as the answer, by the first decision
        print(f"{system_clock.now_iso()} warm-up: {exc}", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            decision = decisions.Decision.from_json(line)
            if tracker is not None:
                out = record_mlflow(state_dir, clone, tracker, decision)
            else:
                out = record_window(state_dir, clone, decision, keep=int(config["keep"]))
            reply = {"ok": True, "id": decision.id, **out}
            if "skipped" in out:
                print(f"{system_clock.now_iso()} {decision.id}: {out['skipped']}",
                      file=sys.stderr)
        except errors.MlgitopsError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the child answers every line, whatever went wrong
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not reply["ok"]:
            print(f"{system_clock.now_iso()} {reply['error']}", file=sys.stderr)
        proto.write(json.dumps(reply) + "\n")
    return 0


def describe(state_dir: Path, *, uri: str | None = None) -> dict[str, str]:
    """Where the MLflow store and the Evidently workspace are, and the commands to open them."""
    uri = uri or mlflow_tracking.default_uri(state_dir)
    workspace = reports.workspace_dir(state_dir)
    return {
        "mlflowUri": uri,
        "mlflowUi": f"mlflow ui --backend-store-uri {uri} --port 5000",
        "evidentlyWorkspace": str(workspace),
        "evidentlyUi": f"evidently ui --workspace {workspace} --port 8000",
    }


def start_all(*sinks: Any) -> None:
    """Start the sinks' child processes (controller start: warm before the first decision)."""
    for sink in sinks:
        if isinstance(sink, EvidentlySink | MlflowSink):
            with contextlib.suppress(errors.MlgitopsError):
                sink.start()


def quiet_close(*sinks: Any) -> None:
    """Stop the sinks' child processes (controller shutdown)."""
    for sink in sinks:
        if not isinstance(sink, EvidentlySink | MlflowSink):
            continue
        try:
            sink.close()
        except Exception as exc:
            ui.console.print(f"[yellow]{type(sink).__name__}[/] did not stop cleanly: {exc}")


if __name__ == "__main__":
    raise SystemExit(_child())
