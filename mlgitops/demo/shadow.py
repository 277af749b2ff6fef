"""``mlgitops demo --shadow``: a shadow catches a bad version before a single user sees it.

init -> publish v1 with ``spec.rollout.strategy: shadow`` -> serving -> live traffic -> publish
v2 (trained on a shifted population) -> v2 runs beside v1 and gets copies of live requests ->
its answers disagree with v1's -> the rollout fails -> revert commit + quarantine in Git -> v2
is gone. Users were answered by v1 throughout: every response names its version
(``x-mlgitops-version``), and the demo counts them.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.table import Table

from mlgitops import settings, ui
from mlgitops.adapters import git, validator
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.demo.embedded import free_port, reverted_by, wait, wait_for_version

MODEL = "credit-risk"
VERSION_HEADER = "x-mlgitops-version"
ROLLOUT = {"strategy": "shadow", "shadow": {"rows": 2000},
           "analysis": {"minRows": 200, "minAgreement": 0.9, "maxLatencyRatio": 1000}}


class Users:
    """Clients posting live rows to the gateway, counting answers by the version named."""

    def __init__(self, url: str, rows: Any) -> None:
        self.url = url
        self.records = rows.to_dict(orient="records")
        self.by_version: dict[str, int] = {}
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=30.0) as client:
            while not self.stop.is_set():
                batch = self.records[i % len(self.records): i % len(self.records) + 10]
                i += 10
                try:
                    r = client.post(self.url, json={"dataframe_records": batch})
                    if r.status_code == 200:
                        v = r.headers.get(VERSION_HEADER, "?")
                        self.by_version[v] = self.by_version.get(v, 0) + 1
                    else:
                        self.failed.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(0.005)


def start_repository(repo: Path, steps: ui.Steps) -> Path:
    """The story's start: ``repo`` with a bare remote, v1 (population A) published with
    ``spec.rollout.strategy: shadow``, pushed; returns the remote."""
    with steps.step(f"init model repository {repo} with a bare remote"):
        remote = repository.init(repo)
    a = examples.credit_population(4000, seed=1)
    with steps.step("train v1 on population A; publish it with spec.rollout.strategy: shadow"):
        publish(examples.train_credit_model(a, seed=1), a, name=MODEL, repo=repo,
                target=examples.TARGET, quiet=True, push=False,
                message="credit-risk v1: trained on population A")
        path = repo / layout.manifest_path(MODEL)
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["rollout"] = ROLLOUT
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        git.commit(repo, message="credit-risk: new versions start in a shadow",
                   paths=[layout.MANIFESTS])
        git.push(repo)
    return remote


def run(*, workdir: Path | None = None, port: int = 0) -> dict[str, Any]:
    """Run the story; what it measured (also printed)."""
    settings.telemetry_off()
    base_dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlgitops-demo-"))
    repo = base_dir / "models-repo"
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    steps = ui.Steps("demo")
    ui.console.rule("[bold]mlgitops demo --shadow[/]: a bad version judged on live traffic "
                    "before any user sees it")
    remote = start_repository(repo, steps)
    v1 = git.last_change(repo, "HEAD", list(layout.model_paths(MODEL)))
    assert v1 is not None
    from mlgitops.controller import run as run_mod

    cfg = settings.controller(repo, port=port, poll_seconds=10.0)
    with run_mod.running(cfg) as ctl:
        with steps.step("controller starts and serves v1"):
            wait_for_version(base, MODEL, v1)
        users = Users(f"{base}/models/{MODEL}/invocations",
                      examples.credit_population(5000, seed=7).drop(columns=examples.TARGET))
        users.thread.start()
        b = examples.credit_population(4000, shift=1.0, seed=2)
        with steps.step("train v2 on population B (shifted) and publish it"):
            v2 = str(publish(examples.train_credit_model(b, seed=2), b, name=MODEL, repo=repo,
                             target=examples.TARGET, quiet=True,
                             message="credit-risk v2: retrained on population B"))
            pushed = time.perf_counter()
        with steps.step("v2 starts beside v1 as its shadow (users still get v1's answers)"):
            wait(lambda: ctl.router.split(MODEL) is not None, 180, "v2 to start beside v1")
        with steps.step("v2's answers on the copies are judged: the rollout fails, Git reverts"):
            wait(lambda: reverted_by(remote, v2) is not None, 300, "the revert of v2")
            revert = reverted_by(remote, v2)
            assert revert is not None
            to_revert = time.perf_counter() - pushed
        with steps.step("the controller drops v2 because Git no longer names it"):
            wait(lambda: ctl.router.split(MODEL) is None, 120, "v2 to be dropped")
        users.stop.set()
        users.thread.join(timeout=30)
        status = ctl.store.status(MODEL).rollout or {}
        analysis = status.get("analysis") or {}
        found = {
            "v1": v1, "v2": v2, "revert": revert.commit,
            "userAnswersByV2": users.by_version.get(v2, 0),
            "userAnswersByV1": users.by_version.get(v1, 0),
            "copiesAnsweredByV2": ctl.router.mirrored[(MODEL, v2)],
            "failedRequests": len(users.failed), "pushToRevertSeconds": round(to_revert, 2),
            "reason": status.get("reason", ""), "agreement": analysis.get("agreement"),
        }
    validator.stop(remote)
    table = Table(title="mlgitops demo --shadow")
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in [("v1 (stable)", v1[:12]), ("v2 (bad, shadowed)", v2[:12]),
                 ("revert commit", revert.commit[:12]),
                 ("user requests answered by v2", str(found["userAnswersByV2"])),
                 ("user requests answered by v1", str(found["userAnswersByV1"])),
                 ("copies v2 answered (never returned)", str(found["copiesAnsweredByV2"])),
                 ("failed user requests", str(found["failedRequests"])),
                 ("v2 pushed → revert on the remote", f"{to_revert:.1f} s"),
                 ("why", str(found["reason"]))]:
        table.add_row(k, v)
    ui.console.print(table)
    ui.console.print(f"Repository: {repo}  (git log -3 shows the revert; quarantine.yaml "
                     "lists v2's digest)")
    return found
