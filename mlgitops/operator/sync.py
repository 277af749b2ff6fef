"""Desired state from Git: one ModelDeployment custom resource per manifest, stamped with its commit.

A manifest that does not validate (or a version that is quarantined, or unsigned under the
signing policy) leaves the resource's spec at the last good version and adds the annotations
``mlgitops.io/held-commit`` and ``mlgitops.io/held-reason``: `deploy` then reports it Stalled
while the serving Deployment stays untouched. A model whose manifest left Git loses its
resource (its Deployment and Service follow by garbage collection) — only resources this
operator created (label ``mlgitops.io/source``), never ones someone else applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mlgitops import errors
from mlgitops.adapters import kubernetes as k8s
from mlgitops.controller import source as source_mod
from mlgitops.core import k8s_objects, manifest

ANNOTATION_SOURCE_COMMIT = "mlgitops.io/source-commit"
ANNOTATION_HELD_COMMIT = "mlgitops.io/held-commit"
ANNOTATION_HELD_REASON = "mlgitops.io/held-reason"
ANNOTATION_QUARANTINED = "mlgitops.io/quarantined"
LABEL_SOURCE = "mlgitops.io/source"


def source_label(url: str) -> str:
    """A label value naming the repository (a hash: URLs do not fit label syntax)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass
class SyncOutcome:
    head: str | None
    applied: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


def resource(dep: manifest.ModelDeployment, *, version: str, head: str, url: str,
             held: tuple[str, str, bool] | None = None) -> dict[str, Any]:
    """The ModelDeployment custom resource for ``dep`` at ``version`` (its manifest's spec)."""
    notes = {k8s_objects.ANNOTATION_COMMIT: version, ANNOTATION_SOURCE_COMMIT: head}
    if held is not None:
        notes[ANNOTATION_HELD_COMMIT], notes[ANNOTATION_HELD_REASON] = held[0], held[1]
        notes[ANNOTATION_QUARANTINED] = "true" if held[2] else "false"
    doc = dep.to_dict()
    return {
        "apiVersion": manifest.API_VERSION,
        "kind": manifest.KIND,
        "metadata": {
            "name": dep.name,
            "labels": {k8s_objects.LABEL_MANAGED_BY: k8s_objects.MANAGER,
                       LABEL_SOURCE: source_label(url)},
            "annotations": notes,
        },
        "spec": doc["spec"],
    }


class GitSync:
    """Keeps the namespace's ModelDeployments equal to the repository's manifests."""

    def __init__(self, cluster: k8s.Cluster, source: source_mod.Source, *, namespace: str) -> None:
        self.cluster = cluster
        self.source = source
        self.namespace = namespace

    def sync(self) -> SyncOutcome:
        """Fetch the branch and apply what it says; Transient errors propagate (retry later)."""
        head = self.source.sync()
        out = SyncOutcome(head)
        if head is None:
            return out
        desired = self.source.desired(head)
        label = f"{LABEL_SOURCE}={source_label(self.source.url)}"
        existing = {r["metadata"]["name"]: r for r in
                    self.cluster.list_resources(self.namespace, label_selector=label)}
        for name, d in sorted(desired.items()):
            current = existing.get(name)
            if d.deployment is not None and d.error is None:
                self.cluster.apply(resource(d.deployment, version=d.version, head=head,
                                            url=self.source.url), namespace=self.namespace)
                out.applied.append(name)
                continue
            reason = d.error or "the manifest is invalid"
            out.held[name] = reason
            if current is None:
                continue  # nothing serves yet and nothing can: the next valid commit creates it
            last = manifest.parse({**current, "metadata": {"name": name}}, source=f"{name} (cluster)")
            keep = current["metadata"].get("annotations", {}).get(k8s_objects.ANNOTATION_COMMIT, "")
            self.cluster.apply(resource(last, version=keep, head=head, url=self.source.url,
                                        held=(d.version, reason, d.quarantined)),
                               namespace=self.namespace)
        for name in sorted(set(existing) - set(desired)):
            if self.cluster.delete_resource(self.namespace, name):
                out.deleted.append(name)
        return out


def safe_sync(sync: GitSync) -> tuple[SyncOutcome | None, str | None]:
    """`GitSync.sync`, with a Transient failure returned as a sentence (the caller retries)."""
    try:
        return sync.sync(), None
    except errors.Transient as exc:
        return None, str(exc)
