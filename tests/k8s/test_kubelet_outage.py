"""The kubelet stand-in survives an API-server outage: the kube-apiserver of the test cluster is
stopped while a pod runs, the pod's readiness changes meanwhile, and once the API server is back
the stand-in writes the pod's status again, deletes and binds pods as before. Figure printed:
seconds from the API server ready again to the pod's new status in it.
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path
from typing import Any

from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.kubelet import Kubelet

from .waits import wait_for


def web_pod(name: str) -> dict[str, Any]:
    """A pod serving its ``/www`` volume; Ready while the file ``ready`` is in it."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "containers": [{
                "name": "web", "image": "python",
                "command": ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0",
                            "--directory", "/www"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                   "periodSeconds": 1, "failureThreshold": 1},
            }],
        },
    }  # fmt: skip


def ready(cluster: TestCluster, ns: str, name: str) -> bool | None:
    """The pod's Ready condition in the API server (None: no pod, or none yet)."""
    try:
        pod = cluster.request(f"/api/v1/namespaces/{ns}/pods/{name}", timeout=3)
    except (urllib.error.URLError, OSError):
        return None
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or ()}
    return None if "Ready" not in conds else conds["Ready"] == "True"


def gone(cluster: TestCluster, ns: str, name: str) -> bool:
    try:
        cluster.request(f"/api/v1/namespaces/{ns}/pods/{name}", timeout=3)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def www(kubelet: Kubelet, name: str) -> Path:
    rec = kubelet.record(name)
    assert rec is not None and rec.log_dir is not None
    return rec.log_dir.parent / "volumes" / "www"


def test_the_kubelet_stand_in_survives_an_api_server_outage(
        k8s_cluster: TestCluster, k8s_namespace: str, tmp_path: Path) -> None:
    ns = k8s_namespace
    pods = f"/api/v1/namespaces/{ns}/pods"
    with Kubelet(k8s_cluster, ns, workdir=tmp_path / "kubelet", backoff=(1.0, 5.0)) as kubelet:
        k8s_cluster.request(pods, method="POST", body=web_pod("a"))
        wait_for("pod a running", lambda: kubelet.running_processes() == 1, kubelet=kubelet)
        (www(kubelet, "a") / "ready").write_text("ok")
        wait_for("pod a Ready", lambda: ready(k8s_cluster, ns, "a"), kubelet=kubelet)

        k8s_cluster.stop_apiserver()
        try:
            (www(kubelet, "a") / "ready").unlink()  # not ready any more, while nobody listens
            wait_for("the stand-in to notice the outage", lambda: kubelet.outages >= 1, timeout=30)
            time.sleep(2.0)  # the outage goes on: status writes fail, the probe keeps failing
            assert kubelet.running_processes() == 1  # the pod's process was left alone
        finally:
            restarted = time.monotonic()
            startup = k8s_cluster.start_apiserver()  # returns once /readyz answers
        wait_for("pod a's new status (not Ready) written after the outage",
                 lambda: ready(k8s_cluster, ns, "a") is False, timeout=60, kubelet=kubelet)
        recovered = time.monotonic() - restarted - startup
        assert kubelet.resumed is not None and kubelet.resumed >= restarted
        watch_resumed = kubelet.resumed - restarted - startup

        (www(kubelet, "a") / "ready").write_text("ok")  # and it goes on probing and reporting
        wait_for("pod a Ready again", lambda: ready(k8s_cluster, ns, "a"), kubelet=kubelet)
        k8s_cluster.request(f"{pods}/a", method="DELETE")  # the watch sees deletions again
        wait_for("pod a deleted for good", lambda: gone(k8s_cluster, ns, "a"), kubelet=kubelet)
        assert kubelet.running_processes() == 0
        k8s_cluster.request(pods, method="POST", body=web_pod("b"))  # and binds new pods
        wait_for("pod b running", lambda: kubelet.running_processes() == 1, kubelet=kubelet)
        (www(kubelet, "b") / "ready").write_text("ok")
        wait_for("pod b Ready", lambda: ready(k8s_cluster, ns, "b"), kubelet=kubelet)
        print(f"\nkube-apiserver restarted, ready in {startup:.1f} s; relative to ready the "
              f"stand-in listed pods again at {watch_resumed:+.1f} s and the pod's status "
              f"written during the outage was in the API server by {recovered:+.1f} s "
              f"({kubelet.outages} outage(s) waited out)")
