"""A data scientist's own pipeline, the whole loop (issue 16, "Done when").

The housing regression of `test_missing_values` (imputer + scaler on four numeric columns, a
one-hot encoder on a string column, Ridge; 10 % of ``lot_size`` missing in training) is published
twice with **no trust setting anywhere** — through the remote's validating hook — and served by a
real `mlgitops up`. Live rows with and without ``lot_size`` are answered with the pipeline's own
predictions; v2, trained on another population, does not fit live data and is reverted in Git;
the Evidently snapshot of the reverting window says what the decision says.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from support.net import free_port, version_at
from support.waits import wait_until
from test_missing_values import housing_pipeline

import mlgitops
from mlgitops import settings
from mlgitops.adapters import evidently_workspace, git
from mlgitops.authoring import repository
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reports, run
from mlgitops.core import decisions, layout

pytestmark = pytest.mark.process

NAME = "house"
DRIFT = {"windowRows": 600, "minRows": 300, "datasetShare": 0.5, "consecutiveWindows": 1,
         "cooldownSeconds": 0, "maxReverts": 1, "revertPeriodSeconds": 3600,
         "action": "revert", "attribution": "previous-baseline"}


def population(n: int, *, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Houses of one market; ``shift`` moves every numeric feature by that many of its spreads."""
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({
        "sqft": rng.normal(1500 + 300 * shift, 300, n),
        "rooms": np.clip(rng.normal(3 + shift, 1, n).round(), 1, 9),
        "lot_size": rng.normal(5000 + 800 * shift, 800, n),
        "age": rng.normal(40 + 20 * shift, 20, n),
        "district": rng.choice(["north", "south", "east", "west"], n),
    })
    f.loc[rng.random(n) < 0.1, "lot_size"] = np.nan
    f["price"] = (100 * f.sqft + 5000 * f.rooms + 3 * f.lot_size.fillna(5000) - 300 * f.age
                  + f.district.map({"north": 9000, "south": 0, "east": 3000, "west": -2000})
                  + rng.normal(0, 1000, n))
    return f


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows as a client sends them: a missing ``lot_size`` is ``null``."""
    out = frame.drop(columns="price").astype(object).to_dict(orient="records")
    for row in out:
        if isinstance(row["lot_size"], float) and np.isnan(row["lot_size"]):
            row["lot_size"] = None
    return out



@pytest.mark.timeout(900)
def test_an_own_pipeline_publishes_with_no_trust_flag_serves_missing_values_and_is_reverted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLGITOPS_TRUST_ALLOW", "MLGITOPS_TRUST_POLICY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLGITOPS_MLFLOW", "0")
    work = tmp_path / "models-repo"
    bare = repository.init(work)
    assert not (bare / settings.REMOTE_TRUST_FILE).exists()  # no trust setting anywhere
    a, b = population(1500, seed=1), population(1500, seed=2, shift=1.5)
    model_a = housing_pipeline(a)
    v1 = str(mlgitops.publish(model_a, a, name=NAME, repo=work, target="price", quiet=True,
                              message="house v1 on market A"))  # pushed through the hook
    path = work / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"].update(DRIFT)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message="house: windows of 600 rows", paths=[layout.MANIFESTS])
    model_b = housing_pipeline(b)
    v2 = str(mlgitops.publish(model_b, b, name=NAME, repo=work, target="price", quiet=True,
                              message="house v2 on market B"))
    assert git.rev_parse(bare, "main") == v2  # the hook took both, with no trust flag

    live = population(3000, seed=9)  # market A again: v1 fits it, v2 does not
    cfg = settings.controller(work, port=free_port(), poll_seconds=2.0)
    with run.running(cfg) as ctl:
        base = ctl.base_url
        wait_until(lambda: version_at(base, NAME) == v2, timeout=240, what="v2 serving")
        # rows with and without lot_size, one batch: the pipeline's own predictions
        mixed = live.head(20)
        assert mixed.lot_size.isna().any() and mixed.lot_size.notna().any()
        r = httpx.post(f"{base}/models/{NAME}/invocations",
                       json={"dataframe_records": records(mixed)}, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], dtype=float),
                                   model_b.predict(mixed.drop(columns="price")), rtol=1e-9)

        stop = threading.Event()
        failed: list[str] = []

        def traffic() -> None:
            rows = records(live)
            i = 0
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    batch = rows[i % 2950: i % 2950 + 50]
                    i += 50
                    try:
                        resp = client.post(f"{base}/models/{NAME}/invocations",
                                           json={"dataframe_records": batch})
                        if resp.status_code != 200:
                            failed.append(f"{resp.status_code} {resp.text[:200]}")
                    except httpx.HTTPError as exc:
                        failed.append(repr(exc))
                    time.sleep(0.02)  # traffic at a steady rate, not a synchronisation

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            wait_until(lambda: version_at(base, NAME) not in (v2, None), timeout=300, what="the revert")
        finally:
            stop.set()
            sender.join(timeout=10)
        assert not failed, failed[:3]
        revert_sha = version_at(base, NAME)
        (entry,) = git.log(bare, "main", [], limit=1)
        assert entry.commit == revert_sha and entry.trailers[layout.TRAILER_REVERTS] == v2
        assert git.tree_id(bare, revert_sha, f"models/{NAME}") == git.tree_id(bare, v1,
                                                                              f"models/{NAME}")
        # v1 answers the same mixed rows with its own predictions
        r = httpx.post(f"{base}/models/{NAME}/invocations",
                       json={"dataframe_records": records(mixed)}, timeout=30)
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], dtype=float),
                                   model_a.predict(mixed.drop(columns="price")), rtol=1e-9)

        root = settings.state_dir(work) / reports.REPORTS
        ident = entry.trailers[layout.TRAILER_REPORT_ID]
        (d,) = [x for x in decision_log.read(root) if x.id == ident]
        assert d.kind is decisions.Kind.REVERT
        assert ctl.decisions.wait(300)
        assert ctl.monitor is not None and ctl.monitor.wait_reports(300)

    # the Evidently snapshot of the reverting window says what the decision says
    assert d.version is not None
    kinds = reports.kinds_of(reports.baseline_at(work, name=NAME, version=d.version))
    stored = evidently_workspace.window_verdicts(
        reports.workspace_dir(settings.state_dir(work)), model=NAME, decision_id=d.id,
        kinds=kinds, share=DRIFT["datasetShare"])
    assert stored is not None, "no Evidently snapshot of the reverting window"
    assert d.features and any(f.drifted for f in d.features)
    assert stored.share == pytest.approx(d.share)
    assert {c.column: c.drifted for c in stored.columns} == {f.name: f.drifted for f in d.features}
