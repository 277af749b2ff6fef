"""A commit that changes only ``spec.serving.replicas`` scales the Deployment without replacing
its pods: the pod template depends on what the pods run, not on the commit of the manifest.

Pure (no cluster): tests/k8s/test_replicas_only.py checks the same on a real API server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgitops.core import k8s_objects as ko
from mlgitops.core import manifest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
V1 = "1" * 40
V2 = "2" * 40
V3 = "3" * 40
SOURCE = ko.Source("https://git.example.com/team/models.git")


def example(**serving: Any) -> manifest.ModelDeployment:
    doc = yaml.safe_load((ROOT / "manifests" / "credit-risk.yaml").read_text())
    dep = manifest.parse(doc, source="manifests/credit-risk.yaml")
    return dataclasses.replace(dep, serving=dataclasses.replace(dep.serving, **serving))


def render(dep: manifest.ModelDeployment, commit: str, current: dict[str, Any] | None = None,
           **kw: Any) -> dict[str, Any]:
    return ko.deployment(dep, commit, owner=ko.Owner("credit-risk", "uid-1"), source=SOURCE,
                         trusted_types=["sklearn.tree._tree.Tree"], namespace="models",
                         current=current, **kw)


def template(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = d["spec"]["template"]
    return out


def test_replicas_only_keeps_the_template_and_pins_the_new_version() -> None:
    first = render(example(replicas=1), V1)
    second = render(example(replicas=3), V2, current=first)
    assert template(second) == template(first)  # the pods do not change
    assert second["spec"]["replicas"] == 3
    assert second["metadata"]["labels"][ko.LABEL_VERSION] == V2
    assert second["metadata"]["annotations"][ko.ANNOTATION_COMMIT] == V2
    assert template(second)["metadata"]["labels"][ko.LABEL_VERSION] == V1
    assert "--commit" in (args := template(second)["spec"]["initContainers"][0]["args"])
    assert args[args.index("--commit") + 1] == V1  # new pods fetch the same model bytes
    # and again: a third replicas-only commit still keeps the pods of the first
    third = render(example(replicas=2), V3, current=second)
    assert template(third) == template(first)


def test_without_the_current_deployment_the_template_is_pinned_to_the_commit() -> None:
    d = render(example(replicas=3), V2)
    assert template(d)["metadata"]["labels"][ko.LABEL_VERSION] == V2
    assert template(d)["metadata"]["annotations"][ko.ANNOTATION_POD_TEMPLATE] == \
        template(render(example(replicas=1), V1))["metadata"]["annotations"][ko.ANNOTATION_POD_TEMPLATE]


def test_what_changes_the_pods_gives_a_new_template() -> None:
    first = render(example(), V1)
    stamp = template(first)["metadata"]["annotations"][ko.ANNOTATION_POD_TEMPLATE]
    other_digest = dataclasses.replace(example(), digest="sha256:" + "f" * 64)
    changes = {
        "digest": render(other_digest, V2, current=first),
        "workers": render(example(workers=2), V2, current=first),
        "image": render(example(), V2, current=first, options=ko.PodOptions(image="mlgitops:0.2.0")),
        "resources": render(example(), V2, current=first,
                            options=ko.PodOptions(limits={"cpu": "1", "memory": "1Gi"})),
    }
    for what, d in changes.items():
        tmpl = template(d)
        assert tmpl["metadata"]["annotations"][ko.ANNOTATION_POD_TEMPLATE] != stamp, what
        assert tmpl["metadata"]["labels"][ko.LABEL_VERSION] == V2, what
        assert tmpl != template(first), what


def test_a_tampered_template_label_is_not_carried_over() -> None:
    first = render(example(), V1)
    first["spec"]["template"]["metadata"]["labels"][ko.LABEL_VERSION] = "not-a-commit"
    second = render(example(replicas=2), V2, current=first)
    assert template(second)["metadata"]["labels"][ko.LABEL_VERSION] == V2


def pod(d: dict[str, Any], name: str, *, ready: bool = True) -> dict[str, Any]:
    tmpl = template(d)["metadata"]
    return {"metadata": {"name": name, "labels": dict(tmpl["labels"]),
                         "annotations": dict(tmpl["annotations"])},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_pods_of_the_kept_template_serve_the_new_version() -> None:
    first = render(example(replicas=1), V1)
    second = render(example(replicas=2), V2, current=first)
    second["metadata"]["generation"] = 2
    second["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                        "readyReplicas": 2, "availableReplicas": 2}
    pods = [pod(first, "a"), pod(second, "b")]
    views = [ko.pod_view(p, second) for p in pods]
    assert [(v.commit, v.runs) for v in views] == [(V2, V1), (V2, V1)]
    assert ko.pod_view(pods[0]).commit == V1  # without the Deployment: what the pod runs
    # the Deployment they belong to stays the same across the two commits (the gateway's key)
    assert {v.deployment for v in views} == {second["metadata"]["name"]}
    assert ko.pod_view(pods[0]).deployment is None
    state = ko.rollout_state(second, pods)
    assert (state.phase, state.commit, state.pod_commit) == (ko.Phase.READY, V2, V1)
    assert state.serving_commits == (V2,)
    # a pod of an older template (another digest) keeps its own version
    old = render(dataclasses.replace(example(), digest="sha256:" + "e" * 64), V3)
    assert ko.pod_view(pod(old, "c"), second).commit == V3
