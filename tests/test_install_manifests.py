"""The kustomize base manifests/install/ is what mlgitops.core.install generates (no cluster).

tests/k8s/test_install.py sends every object to a real API server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlgitops.authoring import repository, validate
from mlgitops.core import install, layout, manifest, source_spec

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "manifests" / "install"


def test_committed_install_manifests_are_generated() -> None:
    """Run tools/k8s/gen_install.py after changing mlgitops.core.install or a schema."""
    wanted = install.files()
    committed = {p.name: p.read_text() for p in INSTALL.glob("*.yaml")}
    assert sorted(committed) == sorted(wanted)
    for name, text in wanted.items():
        assert committed[name] == text, f"manifests/install/{name} is stale: run tools/k8s/gen_install.py"


def test_the_crds_come_from_the_one_schema() -> None:
    (md,) = yaml.safe_load_all((INSTALL / "crd-modeldeployments.yaml").read_text())
    assert md == manifest.crd() == yaml.safe_load((ROOT / repository.CRD_PATH).read_text())
    (mr,) = yaml.safe_load_all((INSTALL / "crd-modelrepositories.yaml").read_text())
    assert mr == source_spec.crd()


def test_kustomization_lists_every_file() -> None:
    (k,) = yaml.safe_load_all((INSTALL / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(p.name for p in INSTALL.glob("*.yaml") if p.name != "kustomization.yaml")


def test_install_manifests_are_not_model_manifests() -> None:
    assert layout.manifest_name("manifests/install/rbac.yaml") is None
    assert layout.manifest_name("manifests/install/crd-modeldeployments.yaml") is None
    assert validate.manifest_files(ROOT) == ["manifests/credit-risk.yaml"]


def test_least_privilege() -> None:
    """Cluster-wide the operator only reads CRDs and namespaces (kopf lists them at start: the
    real-node lane's installed operator waited a minute without it); nothing may list Secrets or
    touch nodes."""
    assert install.CLUSTER_RULES == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]  # fmt: skip
    for rule in install.ROLE_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]
        if "pods" in rule["resources"]:
            assert rule["verbs"] == ["get", "list", "watch"]
