"""A data scientist's own pipeline under progressive delivery (issue 19, off the demo's path):
the loan Pipeline (imputer, scaler, one-hot encoder, string classes) published with
``spec.rollout``, users sending rows with missing values (``null`` numbers and strings).

Real parts only: a model repository with a bare remote, `mlgitops up`'s wiring (controller,
gateway, server processes, the monitor judging each step on the candidate's live rows), users
over HTTP counting each answer by the version that gave it.

- a good v2 (the same population, fresh applicants) passes the shadow and the canary step and
  is promoted: the drift check and the label agreement both read rows with NaN and None, and a
  string column, without a false alarm;
- a bad v3 (a label pipeline bug) under the same rollout is reverted at its shadow step on its
  answers, before a user is answered by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.net import free_port, version_at
from support.pipelines import (
    NAME,
    TARGET,
    applicants,
    loan_pipeline,
    mislabelled,
    records,
)
from support.repos import amend
from support.users import Users
from support.waits import wait_until

import mlgitops
from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.controller import run
from mlgitops.core import layout

pytestmark = pytest.mark.process

ROLLOUT = {"strategy": "shadow-canary", "shadow": {"rows": 300},
           "canary": {"steps": [{"weight": 50, "rows": 300}], "key": "x-client"},
           #: latency is not judged here (a shared test machine's timings are not evidence)
           "analysis": {"minRows": 100, "minAgreement": 0.8, "maxLatencyRatio": 1000}}
#: a step's drift check waits for windowRows of the candidate's rows (on 300, up to 10% of the
#: windows of this very population breach: noise, not drift; bench/drift_false_alarms.py)
DRIFT = {"windowRows": 1000, "minRows": 500, "consecutiveWindows": 1, "cooldownSeconds": 0,
         "maxReverts": 3, "revertPeriodSeconds": 3600}


def publish(work: Path, frame: Any, message: str) -> str:
    return str(mlgitops.publish(loan_pipeline(frame), frame, name=NAME, repo=work, target=TARGET,
                                quiet=True, message=message))


def steps(ctl: run.Controller, version: str) -> list[tuple[str, str, str]]:
    return [(e["mode"], e["verdict"], e["action"]) for e in ctl.store.events(NAME)
            if e["type"] == "RolloutStep" and e.get("commit") == version]


@pytest.mark.timeout(900)
def test_an_own_pipeline_with_missing_values_is_promoted_when_good_and_reverted_when_bad(
        tmp_path: Path) -> None:
    work = tmp_path / "models-repo"
    bare = repository.init(work)
    v1 = str(mlgitops.publish(loan_pipeline(applicants(2000, seed=1)), applicants(2000, seed=1),
                              name=NAME, repo=work, target=TARGET, quiet=True, push=False,
                              message="loan v1"))
    amend(work, NAME, {"drift": DRIFT, "rollout": ROLLOUT}, message="drift, rollout")
    git.push(work)
    stable = git.rev_parse(bare, "main")
    assert stable is not None and stable != v1  # the manifest's commit serves v1's model
    live = records(applicants(3000, seed=7))
    assert any(r["region"] is None for r in live) and any(r["income"] is None for r in live)

    cfg = settings.controller(work, port=free_port(), poll_seconds=5.0)
    with run.running(cfg) as ctl:
        assert ctl.monitor is not None
        ctl.monitor.interval = 0.2
        base = ctl.base_url
        wait_until(lambda: version_at(base, NAME) == stable, timeout=240, what="v1 serving")

        def detail() -> str:
            return f"status {ctl.store.status(NAME).rollout}\nevents " + "\n".join(
                str(e) for e in list(ctl.store.events(NAME))[-8:])

        with Users(f"{base}/models/{NAME}/invocations", clients=2, pause=0.005,
                   records=live) as users:
            v2 = publish(work, applicants(2000, seed=5), "loan v2: fresh applicants")
            ctl.trigger("test")
            # (a canary step answers some requests with v2 too: the router says when it is done)
            wait_until(lambda: getattr(ctl.router.get(NAME), "version", None) == v2
                       and ctl.router.split(NAME) is None, timeout=300,
                       what="the good v2 promoted by the monitor", detail=detail)
            assert steps(ctl, v2) == [("shadow", "pass", "next"), ("canary", "pass", "promote")]
            rollout = ctl.store.status(NAME).rollout
            assert rollout is not None and rollout["phase"] == "promoted"
            # both steps judged the label agreement and the drift of rows with NaN and None
            for step in rollout["history"]:
                judged = {c["check"]: c["ok"] for c in step["checks"]}
                assert judged.get("agreement") and judged.get("drift"), step

            v3 = publish(work, mislabelled(applicants(2000, seed=5)), "loan v3: relabelled")
            ctl.trigger("test")
            wait_until(lambda: (git.log(bare, "main", [], limit=1)[0]
                                .trailers.get(layout.TRAILER_REVERTS) == v3),
                       timeout=300, what="the revert of the bad v3", detail=detail)
            (revert,) = git.log(bare, "main", [], limit=1)
            wait_until(lambda: version_at(base, NAME) == revert.commit, timeout=180,
                       what="v2's content serving at the revert commit")
            answered = users.answered
            wait_until(lambda: users.answered > answered + 20, what="requests after the revert")

        assert not users.failed, users.failed[:3]
        assert users.by_version[v2] > 0 and users.by_version[v3] == 0
        assert ctl.router.mirrored[(NAME, v3)] * 25 >= ROLLOUT["analysis"]["minRows"]
        rollout = ctl.store.status(NAME).rollout
        assert rollout is not None and rollout["phase"] == "aborted"
        assert [(h["step"], h["mode"], h["verdict"]) for h in rollout["history"]] == [
            (1, "shadow", "abort")]
        assert "rollout failed at step 1 (shadow)" in revert.subject
        assert git.tree_id(bare, revert.commit, layout.model_path(NAME)) == \
            git.tree_id(bare, v2, layout.model_path(NAME))
        (reverted,) = [e for e in ctl.store.events(NAME) if e["type"] == "Reverted"]
        assert "same label" in reverted["message"], reverted["message"]
