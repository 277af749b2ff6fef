"""Ground truth on Kubernetes (issue 20): the real operator (kopf, standalone) against the real
API server, its pods run by the kubelet stand-in. Traffic goes through the operator's gateway;
each pod keeps its prediction log, which the operator copies over the cluster network; labels
come back to the operator's port (HMAC-signed) through ``mlgitops.feedback`` or ``mlgitops
feedback --url``. The realized
metrics appear in the ModelDeployment's ``status.performance`` (exactly scikit-learn's), and
v2 (another estimator class, trained on the wrong target) is reverted in Git because v1,
scored in the sandbox on the same labelled rows, does measurably better; the evidence is on
the decision page the revert commit links, and its rows outlive its deleted pods. When both
versions drop alike, only a PerformanceAlert Event."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import accuracy_score
from support.data import FEATURES, make_frame, train
from support.net import free_port

import mlgitops
from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.authoring import repository
from mlgitops.cli import main as cli_main
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet
from mlgitops.operator import handlers

from .test_operator import NAME, operator, served, status_of
from .waits import wait_for

pytestmark = pytest.mark.cluster

SECRET = "ground-truth-secret"


@pytest.fixture()
def cluster(k8s_cluster: TestCluster) -> Iterator[k8s.Cluster]:
    with k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as c:
        install_crds(c.api)
        yield c


def build(root: Path, *, v2_wrong: bool) -> tuple[Path, Path, str, str]:
    """v1 (a forest) and v2 (a logistic regression, on the wrong target when ``v2_wrong``),
    with a ``spec.performance`` policy on accuracy, pushed."""
    work = root / "models-repo"
    bare = repository.init(work)
    a = make_frame(1500, seed=1)
    v1 = str(mlgitops.publish(train(a, seed=1), a, name=NAME, repo=work, target="label",
                              push=False, quiet=True, message="credit v1"))
    path = work / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["performance"] = {"metric": "accuracy", "minimum": 0.85, "minRows": 200}
    doc["spec"].setdefault("rollout", {})["scaleDownDelaySeconds"] = 0  # replaced pods go at once
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(work, message="credit: revert on accuracy", paths=[layout.MANIFESTS])
    wrong = a.assign(label=(a.f0 > 0).astype(int))
    v2 = str(mlgitops.publish(train(wrong if v2_wrong else a, kind="logistic"), a, name=NAME, repo=work,
                              target="label", push=False, quiet=True, message="credit v2"))
    git.push(work)
    return work, bare, v1, v2


def the_runtime() -> Any:
    """The operator's repository runtime (kopf loads the handlers' file as a module of its own)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == handlers.__file__ and "flags" in getattr(
                module, "_runtimes", {}):
            return module._runtimes["flags"][0]
    raise AssertionError("the operator runs no repository from its flags")


@pytest.mark.parametrize("case", ["less-accurate", "world-changed"])
def test_labels_through_the_operator_show_realized_accuracy_and_revert_the_worse_version(
    case: str, cluster: k8s.Cluster, k8s_cluster: TestCluster, k8s_namespace: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """less-accurate: v2 is reverted with the evidence on its page; world-changed (the labels
    follow another rule: both versions drop alike): only a PerformanceAlert Event."""
    ns, port = k8s_namespace, free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLGITOPS_PREDICTION_LOG_INTERVAL", "0.5")  # the pods get it too
    monkeypatch.setenv("MLGITOPS_OPERATOR_PUBLIC_URL", base)
    monkeypatch.setenv("MLGITOPS_WEBHOOK_SECRET", SECRET)  # what mlgitops.feedback signs with
    work, bare, v1, v2 = build(tmp_path, v2_wrong=case == "less-accurate")
    live = make_frame(400, seed=7)
    truth = (live.label if case == "less-accurate" else (live.f2 > 0).astype(int)).to_numpy()
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet, \
            operator(k8s_cluster, ns, work, tmp_path / "operator", http_port=port,
                     secret=SECRET):
        wait_for("v2 Ready", lambda: served(cluster, ns, v2), timeout=240, kubelet=kubelet)
        runtime = the_runtime()
        runtime.monitor.performance_interval = 0.5

        def routed() -> bool:
            try:
                r = httpx.get(f"{base}/v2/models/{NAME}", timeout=5)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json().get("version") == v2

        wait_for("the operator's gateway routing to v2", routed, timeout=60)
        ids: list[str] = []
        predicted: list[int] = []
        for k in range(0, len(live), 50):
            batch = live.iloc[k:k + 50][FEATURES]
            r = httpx.post(f"{base}/models/{NAME}/invocations", headers={"X-Request-Id": f"b{k}"},
                           json={"dataframe_records": batch.to_dict(orient="records")}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == f"b{k}"
            ids += [f"b{k}:{i}" for i in range(len(batch))]
            predicted += [int(p) for p in r.json()["predictions"]]

        def copied() -> int:
            frame = runtime.predictions.read(NAME)
            return int((frame["version"] == v2).sum()) if len(frame) else 0

        wait_for("v2's rows copied from its pod", lambda: copied() == len(live), timeout=120)
        unsigned = httpx.post(f"{base}/v2/models/{NAME}/feedback", timeout=10,
                              json={"ids": ids[:1], "labels": [1]})
        assert unsigned.status_code == 401, unsigned.text
        if case == "less-accurate":  # from Python
            sent = mlgitops.feedback(NAME, np.asarray([*ids, "never-served"]),
                                     np.append(truth, 1), url=base)
            assert sent["received"] == len(live) + 1 and sent["unknown"] == 1, sent
        else:  # from the shell, a file of labels
            labels = tmp_path / "labels.parquet"
            pd.DataFrame({"request_id": [*ids, "never-served"],
                          "defaulted": np.append(truth, 1)}).to_parquet(labels)
            said = CliRunner().invoke(cli_main, [
                "feedback", NAME, "--labels", str(labels), "--id-column", "request_id",
                "--label-column", "defaulted", "--url", base])
            assert said.exit_code == 0, said.output
            assert f"{len(live) + 1} labels sent" in said.output
            assert "1 for ids no kept prediction has" in " ".join(said.output.split())

        def shown() -> dict[str, Any] | None:
            perf = status_of(cluster, ns).get("performance") or {}
            return next((v for v in perf.get("versions") or ()
                         if v["version"] == v2 and v["labelled"] == len(live)), None)

        figure = wait_for("v2's realized accuracy in status.performance", shown, timeout=120)
        assert figure["realized"]["accuracy"] == accuracy_score(truth, predicted)
        assert status_of(cluster, ns)["performance"]["unmatched"] == 1
        if case == "world-changed":
            cr = cluster.get_resource(ns, NAME)
            assert cr is not None

            def alerted() -> list[str]:
                return [str(e.get("message")) for e in cluster.events(cr)
                        if e.get("reason") == "PerformanceAlert"]

            (message,) = wait_for("the PerformanceAlert Event", alerted, timeout=240)
            assert "both versions degrade: the world changed" in message
            assert git.text(bare, "rev-parse", "refs/heads/main") == git.text(
                work, "rev-parse", "HEAD")  # nothing reverted
            assert served(cluster, ns, v2)
            return

        def reverted() -> str | None:
            for e in git.log(bare, "refs/heads/main", layout.model_paths(NAME), limit=3):
                if e.trailers.get(layout.TRAILER_REVERTS) == v2:
                    return e.commit
            return None

        revert = wait_for("the revert commit of v2", reverted, timeout=240, kubelet=kubelet)
        assert git.tree_id(bare, revert, f"models/{NAME}") == git.tree_id(bare, v1,
                                                                        f"models/{NAME}")
        acted = wait_for("the monitor's performance decision", lambda: [
            d for d in runtime.monitor.performance_decisions if d[1].action != "keep"])
        (_, decision), = acted  # recorded once the revert path returned
        ev: dict[str, Any] = dict(decision.evidence)
        assert decision.action == "revert" and ev["rows"] == len(live)
        assert ev["previous"] > 0.9 and ev["new"] < 0.85 and ev["pValue"] < 1e-6
        (entry,) = git.log(bare, "refs/heads/main", [], limit=1)
        assert runtime.monitor.dispatcher.wait(120)

        def page() -> str | None:
            r = httpx.get(entry.trailers[layout.TRAILER_REPORT], timeout=10)
            return r.text if r.status_code == 200 else None

        text = wait_for("the revert's decision page", page, timeout=60)
        for said in ("previousValue", "servingValue", "pValue", str(ev["previous"]),
                     str(ev["new"]), str(ev["pValue"])):
            assert said in text, said
        wait_for("v1's content serving again", lambda: served(cluster, ns, revert), timeout=240,
                 kubelet=kubelet)

        def v2_pods() -> list[str]:
            return [p.name for p in map(ko.pod_view, cluster.pods(ns, NAME)) if p.runs == v2]

        wait_for("v2's pods deleted", lambda: not v2_pods(), timeout=240, kubelet=kubelet)
        frame = runtime.predictions.read(NAME)  # copied from them before they went
        assert int((frame["version"] == v2).sum()) == len(live)
