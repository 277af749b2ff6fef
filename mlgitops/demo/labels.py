"""``mlgitops demo --labels``: a version the drift checks pass, caught by its labels.

init -> publish v1 (trained on the true outcome) with ``spec.performance`` -> serving -> live
traffic -> publish v2: same applicants, same features, but trained *and evaluated* on a proxy
label a pipeline change slipped in ("any late payment" instead of "defaulted"); its offline
evaluation says it is nearly perfect -> v2 serves; the live inputs are the population both
versions were published with, so every drift window passes -> the true outcomes come back
late, through ``mlgitops.feedback`` -> the Monitor joins them with the prediction log, scores
v1 in the sandbox on the same rows, finds v2 measurably worse and reverts it in Git -> v1's
content serves again. The demo prints the timings, each version's realized metrics
(scikit-learn's, on the labelled rows) with the CBPE estimate beside them (blind, as it says, to
a model that is confidently wrong) and the link to the decision page.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml
from rich.table import Table

from mlgitops import errors, settings, ui
from mlgitops.adapters import git, validator
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.demo.embedded import free_port, reverted_by, wait, wait_for_version

MODEL = "credit-risk"
VERSION_HEADER = "x-mlgitops-version"
ID_HEADER = "x-request-id"
#: v2's revert rule: accuracy on at least 300 labelled rows, not below 0.78, not more than
#: 0.1 under the version's own offline evaluation.
PERFORMANCE = {"metric": "accuracy", "minimum": 0.78, "maxDrop": 0.1, "minRows": 300}
#: Drift windows of 400 rows, so that several close on v2 before its labels come back.
DRIFT = {"windowRows": 400, "minRows": 200}
#: For the servers and the Monitor this demo starts: rows written within a second, labelled
#: rows checked every two.
ENVIRONMENT = {"MLGITOPS_PREDICTION_LOG_INTERVAL": "1", "MLGITOPS_PERFORMANCE_SECONDS": "2"}


def proxy_label(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the wrong target v2 is trained and evaluated on: any late payment."""
    return frame.assign(**{examples.TARGET: (frame["late_payments"] > 0).astype(int)})


class Users:
    """Clients posting live applicants to the gateway; remembers which version answered each
    row (by its id) and the applicant's true outcome, which the world reveals later."""

    def __init__(self, url: str, rows: pd.DataFrame) -> None:
        self.url = url
        self.rows = rows.reset_index(drop=True)
        self.answered: list[tuple[str, str, int]] = []  # (row id, version, outcome)
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.lock = threading.Lock()

    def _run(self) -> None:
        features = self.rows[list(examples.FEATURES)]
        outcome = self.rows[examples.TARGET].to_numpy()
        n, i, batch = len(self.rows), 0, 20
        with httpx.Client(timeout=30.0) as client:
            while not self.stop.is_set():
                at = (i * batch) % (n - batch)
                rid = f"applicant-{i}"
                i += 1
                records = features.iloc[at:at + batch].to_dict(orient="records")
                try:
                    r = client.post(self.url, json={"dataframe_records": records},
                                    headers={ID_HEADER: rid})
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.failed.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                version = r.headers.get(VERSION_HEADER, "?")
                got = r.headers.get(ID_HEADER, rid)
                with self.lock:
                    self.answered += [(f"{got}:{k}", version, int(outcome[at + k]))
                                      for k in range(batch)]
                time.sleep(0.05)

    def rows_by(self, version: str) -> int:
        with self.lock:
            return sum(1 for _, v, _ in self.answered if v == version)

    def outcomes(self, versions: tuple[str, ...]) -> tuple[list[str], list[int]]:
        """The ids and true outcomes of the rows the given versions answered so far."""
        with self.lock:
            kept = [(i, y) for i, v, y in self.answered if v in versions]
        return [i for i, _ in kept], [y for _, y in kept]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment of the servers and the Monitor this demo starts (a value
    the user set already wins)."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run(*, workdir: Path | None = None, port: int = 0) -> dict[str, Any]:
    """Run the story; what it measured (also printed)."""
    settings.telemetry_off()
    with _environment(ENVIRONMENT):
        return _run(workdir=workdir, port=port)


def _run(*, workdir: Path | None, port: int) -> dict[str, Any]:
    base_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlgitops-demo-"))
    repo = base_dir / "models-repo"
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    steps = ui.Steps("demo")
    timings: list[tuple[str, str]] = []
    ui.console.rule("[bold]mlgitops demo --labels[/]: a version the drift checks pass, "
                    "reverted for what it gets wrong")
    with steps.step(f"init model repository {repo} with a bare remote"):
        remote = repository.init(repo)
    a = examples.credit_population(4000, seed=1)
    held_out = examples.credit_population(1000, seed=3)
    with steps.step("train v1 on the true outcome; publish it with its evaluation and "
                     "spec.performance (accuracy)"):
        publish(examples.train_credit_model(a, seed=1), a, name=MODEL, repo=repo,
                target=examples.TARGET, quiet=True, push=False, evaluation_frame=held_out,
                message="credit-risk v1: trained on the defaults")
        path = repo / layout.manifest_path(MODEL)
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["performance"] = PERFORMANCE
        doc["spec"]["drift"].update(DRIFT)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        git.commit(repo, message="credit-risk: revert on realized accuracy",
                   paths=[layout.MANIFESTS])
        git.push(repo)
        v1 = git.last_change(repo, "HEAD", list(layout.model_paths(MODEL)))
        assert v1 is not None
    from mlgitops.controller import decision_pages
    from mlgitops.controller import run as run_mod

    cfg = settings.controller(repo, port=port, poll_seconds=10.0)
    with run_mod.running(cfg) as ctl:
        mon = ctl.monitor
        if mon is None:
            raise errors.ConfigError("the demo needs the monitor: unset MLGITOPS_MONITOR")
        with steps.step("controller starts and serves v1"):
            wait_for_version(base, MODEL, v1)
        users = Users(f"{base}/models/{MODEL}/invocations",
                      examples.credit_population(6000, seed=7))
        users.thread.start()
        with steps.step("users are answered by v1 (400 rows)"):
            wait(lambda: users.rows_by(v1) >= 400, 120, "v1 to answer 400 rows")
        with steps.step("train v2 on a proxy label (any late payment); publish it with its "
                        "own, equally wrong, evaluation"):
            wrong = proxy_label(a)
            v2 = str(publish(examples.train_credit_model(wrong, seed=2), wrong, name=MODEL,
                             repo=repo, target=examples.TARGET, quiet=True,
                             evaluation_frame=proxy_label(held_out),
                             message="credit-risk v2: retrained after the label pipeline "
                                     "change"))
            pushed = time.perf_counter()
        with steps.step("v2 switches in while users keep coming"):
            wait_for_version(base, MODEL, v2)
            timings.append(("v2 pushed → v2 answers", f"{time.perf_counter() - pushed:.1f} s"))
        with steps.step("the drift checks pass on v2 (same population: 2 windows)"):
            wait(lambda: len(_drift_windows(ctl, v2)) >= 2, 180, "two drift windows on v2")
            windows = _drift_windows(ctl, v2)
        with steps.step("labels come back late: the true outcomes of v1's rows, then v2's, "
                        "through mlgitops.feedback"):
            from mlgitops.controller.feedback import send  # mlgitops.feedback

            ids, outcomes = users.outcomes((v1,))
            first = send(MODEL, ids, outcomes, url=base)
            ids, outcomes = users.outcomes((v2,))
            second = send(MODEL, ids, outcomes, url=base)
            labelled = time.perf_counter()
        with steps.step("the Monitor scores v1 on v2's labelled rows in the sandbox; v2 is "
                        "measurably worse: revert commit in Git"):
            wait(lambda: reverted_by(remote, v2) is not None, 300, "the revert of v2")
            revert = reverted_by(remote, v2)
            assert revert is not None
            timings.append(("labels sent → revert on the remote",
                            f"{time.perf_counter() - labelled:.1f} s"))
        with steps.step("the controller serves v1's content again because Git says so"):
            wait_for_version(base, MODEL, revert.commit)
            timings.append(("v2 pushed → v1's content answers again",
                            f"{time.perf_counter() - pushed:.1f} s"))
        users.stop.set()
        users.thread.join(timeout=30)
        page = revert.trailers.get(layout.TRAILER_REPORT, "")
        with steps.step("the decision page, with the performance evidence"):
            mon.dispatcher.wait(120, only=(decision_pages.Pages,))
        decision = next((d for _, d in reversed(mon.performance_decisions)
                         if d.action == "revert"), None)
        figures = _figures(ctl, (v1, v2))
        from mlgitops.core import status as status_mod

        condition = ctl.store.status(MODEL).condition(status_mod.ConditionType.PERFORMANCE)
        found: dict[str, Any] = {
            "repo": str(repo), "remote": str(remote), "v1": v1, "v2": v2, "revert": revert.commit, "page": page,
            "pageServed": _served(page), "driftWindowsOnV2": [w.get("verdict") for w in windows],
            "feedback": [first, second], "failedRequests": len(users.failed),
            "evidence": dict(decision.evidence) if decision else {},
            "figures": figures, "timings": dict(timings),
            "performanceCondition": condition.to_dict() if condition else None,
        }
    validator.stop(remote)  # the demo leaves nothing running behind it
    _print(found, timings)
    return found


def _drift_windows(ctl: Any, version: str) -> list[dict[str, Any]]:
    return [e for e in ctl.store.events(MODEL)
            if e.get("type") == "DriftWindow" and e.get("commit") == version]


def _figures(ctl: Any, versions: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each version's realized metrics on its labelled rows and its CBPE estimate."""
    from mlgitops.adapters import prediction_log, prediction_log_labels
    from mlgitops.controller import performance

    perf = performance.measure(
        MODEL, prediction_log.Directory(ctl.state_dir / performance.STATS),
        prediction_log_labels.Labels(ctl.state_dir / performance.LABELS), window_seconds=None)
    return {f.version: {"rows": f.rows, "labelled": f.labelled, "realized": f.realized,
                        "estimated": f.estimated}
            for f in perf.overall if f.version in versions}


def _print(found: dict[str, Any], timings: list[tuple[str, str]]) -> None:
    v1, v2 = found["v1"], found["v2"]
    table = Table(title="realized on the labelled rows (scikit-learn) · estimated with no "
                        "label (CBPE)")
    table.add_column("metric", no_wrap=True)
    found_versions = [(n, v) for n, v in (("v1", v1), ("v2", v2)) if v in found["figures"]]
    for n, v in found_versions:
        table.add_column(f"{n} {v[:8]}", justify="right")
        table.add_column(f"{n} CBPE", justify="right")
    for label, key in (("accuracy", "accuracy"), ("ROC AUC", "roc_auc"), ("F1", "f1"),
                       ("log loss", "log_loss")):
        cells = []
        for _, v in found_versions:
            f = found["figures"][v]
            cells += [_n(f["realized"].get(key)), _n(f["estimated"].get(key))]
        table.add_row(label, *cells)
    table.add_row("rows (labelled)", *[
        c for _, v in found_versions for c in (
            f"{found['figures'][v]['rows']} ({found['figures'][v]['labelled']})", "")])
    ui.console.print(table)
    ui.console.print("[dim]CBPE trusts the model's own probabilities: v2 is confidently wrong "
                     "(it learned the proxy label well), so only the labels show it.[/]")
    ev = found["evidence"]
    summary = Table(title="mlgitops demo --labels")
    summary.add_column("what", no_wrap=True)
    summary.add_column("value", overflow="fold")
    rows = [("v1 (true outcome)", v1[:12]), ("v2 (proxy label)", v2[:12]),
            ("drift windows on v2", ", ".join(str(v) for v in found["driftWindowsOnV2"])),
            ("labels sent (v1's rows · v2's rows)",
             " · ".join(f"{b.get('received', 0)} received, {b.get('unknown', 0)} not in the "
                        "prediction log yet" for b in found["feedback"])
             + " (those join once their rows are written)"),
            ("revert commit", found["revert"][:12]),
            ("mlgitops status", "Performance {reason}: {message}".format_map(
                found["performanceCondition"] or {"reason": "-", "message": "-"})),
            ("on v2's labelled rows", f"{ev.get('metric')} v2 {_n(ev.get('new'))} vs v1 "
             f"{_n(ev.get('previous'))} on {ev.get('rows')} rows ({ev.get('method')}, "
             f"p = {_n(ev.get('pValue'))}); v2's own evaluation said {_n(ev.get('evaluation'))}"),
            *timings,
            ("failed user requests", str(found["failedRequests"])),
            ("decision page (why v2 was reverted)", found["page"] or "-")]
    for k, v in rows:
        summary.add_row(k, v)
    ui.console.print(summary)
    ui.console.print(f"Repository: {found['repo']}  (git log -3 shows the revert; "
                     f"mlgitops status --repo {found['repo']} --wide shows the figures)")


def _n(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float | np.floating) else "-"


def _served(url: str) -> bool:
    if not url:
        return False
    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False
