"""The scenario table (`scenarios`) against the Kubernetes runtime on the test cluster.

The same `Reconciler` as ``mlgitops up``, wired by the operator (`operator.runtime`) with the
Kubernetes ports: `KubernetesWorkloads` applies real Deployments and Services to the real API
server, the kubelet stand-in runs their pods (the real ``mlgitops fetch-model`` and ``mlgitops
serve``), `ResourceStatus` keeps the state in the ModelDeployment's status. What serves is
asked of a ready pod over HTTP.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import scenarios

from mlgitops import settings
from mlgitops.adapters import kubernetes as k8s
from mlgitops.adapters.kubernetes.workloads import PodHandle
from mlgitops.controller import reconciler as rec
from mlgitops.devcluster.cluster import TestCluster
from mlgitops.devcluster.crds import install_crds
from mlgitops.devcluster.kubelet import Kubelet, http_get
from mlgitops.operator.runtime import Repository, RepositoryRuntime


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Template:
    return scenarios.build_template(tmp_path_factory.mktemp("scenarios-k8s"))


@dataclass
class K8sDriver:
    bare: Path
    reconciler: rec.Reconciler[PodHandle]
    cluster: k8s.Cluster
    namespace: str
    kubelet: Kubelet
    digests: dict[str, str]
    """commit -> its model digest (the template's)."""

    def logs(self) -> str:
        return "".join(f"\n--- {r.name}/{c}:\n{self.kubelet.logs(r.name, c)[-2000:]}"
                       for r in self.kubelet.records.values() for c in ("fetch-model", "server"))

    def converge(self) -> None:
        scenarios.converge(self.reconciler, timeout=180.0, on_timeout=self.logs)
        handle = self.reconciler.router.get(scenarios.NAME)
        if handle is not None:  # a ready pod answers with the version the Deployment pins,
            # or, when the commit left the pods as they were (a revert to the content that
            # serves), with the commit they were rendered at: the same model digest
            answers = set()
            for pod in self.cluster.list_pods(self.namespace, scenarios.NAME):
                if pod.ready and pod.endpoint and pod.commit == handle.version:
                    status, body = http_get(f"{pod.endpoint}/v2/models/{scenarios.NAME}")
                    if status == 200:
                        answers.add(str(json.loads(body)["version"]))
            assert answers and all(a == handle.version or self.digests.get(a) == handle.digest
                                   for a in answers), (answers, handle)


@pytest.fixture()
def driver(template: scenarios.Template, k8s_cluster: TestCluster, k8s_namespace: str,
           tmp_path: Path) -> Iterator[K8sDriver]:
    bare = tmp_path / "remote.git"
    shutil.copytree(template.bare, bare, symlinks=True)
    cfg = settings.OperatorSettings(repo_url=f"file://{bare}", namespace=k8s_namespace,
                                    state_dir=tmp_path / "operator", progress_deadline_seconds=60)
    with (k8s.Cluster.from_kubeconfig(k8s_cluster.kubeconfig_path, timeout=20) as cluster,
          Kubelet(k8s_cluster, k8s_namespace, workdir=tmp_path / "kubelet",
                  backoff=(1.0, 5.0)) as kubelet):
        install_crds(cluster.api)
        runtime = RepositoryRuntime(cluster, cfg, Repository("flags", cfg.repo_url, k8s_namespace))
        yield K8sDriver(bare, runtime.reconciler, cluster, k8s_namespace, kubelet,
                        {template.commits[k]: d for k, d in template.digests.items()})


@pytest.mark.parametrize("scenario", [
    pytest.param(name, marks=pytest.mark.xfail(reason=scenarios.NOT_YET["kubernetes"][name],
                                               run=False))
    if name in scenarios.NOT_YET["kubernetes"] else name
    for name in sorted(scenarios.SCENARIOS)])
def test_scenario_on_the_kubernetes_runtime(scenario: str, driver: K8sDriver,
                                            template: scenarios.Template) -> None:
    scenarios.run_scenario(scenarios.SCENARIOS[scenario], driver, template)
    # the state is the resource's: its status says what the reconciler's store says
    cr = driver.cluster.get_resource(driver.namespace, scenarios.NAME)
    assert cr is not None
    st = driver.reconciler.store.status(scenarios.NAME)
    assert cr["status"]["servedCommit"] == st.served_commit
    assert cr["status"]["conditions"] == [c.to_dict() for c in st.conditions]
