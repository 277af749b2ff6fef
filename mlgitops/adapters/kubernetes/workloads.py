"""The Kubernetes runtime's ``ports.Workloads``: a Deployment per model version, a Service per model.

The reconciler calls it as it calls the local runtime. `KubernetesWorkloads.declare` keeps one
ModelDeployment per model Git declares (its spec the manifest's, parsed once by the source;
those of models Git no longer declares are deleted, and what they own goes with them);
`deploy` renders the version's own Deployment (`versions`: named by its pods' content, so a
replicas-only commit scales the same one) owned by that resource and pinned to the version's
commit, applies it when it changed, and reads its rollout: under way is `errors.Waiting` (the
reconciler looks again), failed (the progress deadline passed) is `errors.ModelError` (held;
the Service still selects the older version's pods), done switches the model's Service to its
pods and is a `PodHandle`. The replaced version's Deployment keeps its pods (marked replaced)
while the reconciler keeps it warm for a rollback (`route` switches the Service back to it);
`stop` deletes it. Within `beside` (a progressive rollout's candidate, `operator.progressive`)
`deploy` leaves the model's Service alone and gives the candidate a Service of its own.
`recover` adopts what the resources' status says serves, when its pods are ready, and deletes
the model's other Deployments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlgitops import errors
from mlgitops.adapters.kubernetes import versions
from mlgitops.adapters.kubernetes.api import Cluster
from mlgitops.core import k8s_objects as ko
from mlgitops.core import manifest, plan

ANNOTATION_RENDERED = "mlgitops.io/rendered"
ANNOTATION_PLACEHOLDER = "mlgitops.io/placeholder"
LABEL_SOURCE = "mlgitops.io/source"
#: The spec of a resource created for a model whose manifest is invalid (the status says why).
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


def source_label(url: str) -> str:
    """A label value naming the repository (a hash: URLs do not fit label syntax)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PodHandle:
    """A serving version on Kubernetes: the model's Service, not a process."""

    name: str
    version: str
    digest: str
    url: str
    deployment: str = ""
    """The version's Deployment ("": the model's one, as named before versions had theirs)."""
    addresses: tuple[str, ...] = field(default=(), compare=False)
    """Its ready pods' addresses when `deploy` handed it out: where the operator's gateway
    sends requests until its own reading of the pods (`operator.traffic`) has caught up."""

    @property
    def key(self) -> Hashable:
        return (self.name, self.version)

    @property
    def where(self) -> str:
        return self.url

    @property
    def label(self) -> str:
        return f"Deployment {self.deployment or ko.object_name(self.name)}"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest, "url": self.url,
                "deployment": self.deployment}


@dataclass(frozen=True)
class Leftover:
    """A Deployment of a model that neither serves nor is kept warm, deleted by `recover`."""

    name: str
    version: str | None
    deployment: str
    role: str = "replaced"

    @property
    def what(self) -> str:
        return f"Deployment {self.deployment}"

    @property
    def details(self) -> Mapping[str, Any]:
        return {"deployment": self.deployment}


@dataclass(frozen=True)
class Recovery:
    adopted: dict[str, PodHandle]
    lost: dict[str, str]
    leftovers: Sequence[Leftover] = ()


@dataclass(frozen=True)
class Renderer:
    """How the operator renders a model's pods (its settings, never the manifest's to set)."""

    source: ko.Source
    options: ko.PodOptions = field(default_factory=ko.PodOptions)
    admits: Callable[[str], bool] = lambda t: True
    """The operator's trust policy: the manifest's trusted types it lets pods load."""

    def __call__(self, dep: manifest.ModelDeployment, version: str, owner: ko.Owner,
                 namespace: str, current: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The version's Deployment (`versions.versioned`) and the Service selecting its pods;
        with ``current`` (that Deployment as read), the pods' template stays the one they run,
        so a replicas-only commit scales."""
        loadable = [t for t in dep.trusted_types if self.admits(t)]
        deployment = versions.versioned(ko.deployment(
            dep, version, owner=owner, source=self.source, trusted_types=loadable,
            namespace=namespace, options=self.options, current=current), dep.name)
        service = ko.service(dep, owner=owner, namespace=namespace, options=self.options)
        service = versions.routed(service, dep.name, versions.template_of(deployment) or "")
        stamp = fingerprint({"d": deployment, "s": service})
        deployment["metadata"].setdefault("annotations", {})[ANNOTATION_RENDERED] = stamp
        return [deployment, service]


def resource(name: str, spec: Mapping[str, Any], *, version: str, head: str, url: str,
             owner: Mapping[str, Any] | None = None,
             placeholder: str | None = None) -> dict[str, Any]:
    """The ModelDeployment custom resource of model ``name`` (labelled with its repository)."""
    notes = {ko.ANNOTATION_COMMIT: version}
    if placeholder is not None:
        notes[ANNOTATION_PLACEHOLDER] = placeholder
    meta: dict[str, Any] = {
        "name": name,
        "labels": {ko.LABEL_MANAGED_BY: ko.MANAGER, LABEL_SOURCE: source_label(url)},
        "annotations": notes,
    }
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    return {"apiVersion": manifest.API_VERSION, "kind": manifest.KIND, "metadata": meta,
            "spec": dict(spec)}


class Render(Protocol):
    """Renders a model's objects (`Renderer`); ``current`` is its Deployment as read, if any."""

    def __call__(self, dep: manifest.ModelDeployment, version: str, owner: ko.Owner,
                 namespace: str, current: Mapping[str, Any] | None = None,
                 ) -> list[dict[str, Any]]: ...


class KubernetesWorkloads:
    """``ports.Workloads`` on one namespace, for the models of one repository (``url``)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        *,
        url: str,
        render: Render,
        owner: Mapping[str, Any] | None = None,
        rollout_poll: float = 0.2,
        alive_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        record: Callable[..., None] = lambda name, **event: None,
        seen: Callable[[dict[str, Any]], None] = lambda cr: None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.url = url
        self.render = render
        self.owner = owner
        """An ownerReference (the ModelRepository) every ModelDeployment it creates carries."""
        self.rollout_poll = rollout_poll
        self.alive_every = alive_every
        self.clock = clock
        self.record = record
        """``record(name, reason=, message=, type=)``: an Event on the model's resource."""
        self.seen = seen
        """Told of every ModelDeployment as written (the status mirror caches it)."""
        self.selector = f"{LABEL_SOURCE}={source_label(url)}"
        self._alive: dict[str, tuple[float, bool]] = {}
        self._serving: dict[str, str] = {}
        """model -> the Deployment its Service selects (as this process last set it)."""
        self._kept: dict[str, set[str]] = {}
        """model -> Deployments handed out (or rolling out) and not stopped: kept by `_route`."""
        self._templates: dict[str, str] = {}
        """Deployment -> its pods' template digest."""
        self._beside = False
        """Set by `beside`: `deploy` starts a rollout's candidate next to the serving version."""
        self.before_stop: list[Callable[[str], None]] = []
        """Told the model's name before `stop` deletes a version's pods (the operator copies
        their prediction logs then)."""

    @contextlib.contextmanager
    def beside(self) -> Iterator[None]:
        """Within the block, `deploy` runs a progressive rollout's candidate: its Deployment
        beside the serving one and a Service of its own (named after that Deployment) selecting
        only its pods; the model's Service keeps selecting the stable version until `route`."""
        self._beside = True
        try:
            yield
        finally:
            self._beside = False

    def endpoint(self, name: str) -> str:
        return f"http://{ko.object_name(name)}.{self.namespace}.svc"

    # what Git declares -------------------------------------------------------------------
    def declare(self, head: str, desired: Mapping[str, plan.Desired]) -> None:
        """One ModelDeployment per declared model; those Git no longer declares are deleted.

        A valid version's manifest becomes the resource's spec; a model held before it ever had
        a resource (its manifest invalid, its version quarantined or unsigned) gets one all
        the same, so that its status can say why (a placeholder spec when the manifest is
        invalid); a held model that has one keeps the spec it had.
        """
        existing = {str(r["metadata"]["name"]): r for r in
                    self.cluster.list_resources(self.namespace, label_selector=self.selector)}
        for name, d in sorted(desired.items()):
            current = existing.get(name)
            if d.deployment is not None and (d.error is None or current is None):
                doc = resource(name, d.deployment.to_dict()["spec"], version=d.version,
                               head=head, url=self.url, owner=self.owner)
            elif current is None:
                spec = {"model": {"path": f"models/{name}", "digest": PLACEHOLDER_DIGEST}}
                doc = resource(name, spec, version=d.version, head=head, url=self.url,
                               owner=self.owner, placeholder="the manifest in Git is invalid; "
                               "the status says why")
            else:
                continue
            if current is not None and _same(current, doc):
                continue
            self.seen(self.cluster.apply(doc, namespace=self.namespace))
        for name in sorted(set(existing) - set(desired)):
            self.cluster.delete_resource(self.namespace, name)
            self._alive.pop(name, None)

    # ports.Workloads ---------------------------------------------------------------------
    def deploy(self, desired: plan.Desired, *, model_dir: Path) -> PodHandle:
        """Apply the version's Deployment; once its pods are ready, the Service selects them
        and the handle is returned."""
        dep, name, version = desired.deployment, desired.name, desired.version
        if dep is None:
            raise errors.ManifestError(desired.error or f"the manifest of {name} is invalid")
        cr = self.cluster.get_resource(self.namespace, name)
        if cr is None or cr["metadata"].get("annotations", {}).get(ANNOTATION_PLACEHOLDER):
            raise errors.Waiting(f"the ModelDeployment {name} is being written", delay=1.0)
        owner = ko.Owner.of(cr)
        deployment, service = self.render(dep, version, owner, self.namespace, None)
        dname = str(deployment["metadata"]["name"])
        current = self.cluster.read_deployment_named(self.namespace, dname)
        if current is not None:
            deployment, service = self.render(dep, version, owner, self.namespace, current)
        live = current
        stamp = ((current or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_RENDERED)
        if stamp != deployment["metadata"]["annotations"][ANNOTATION_RENDERED]:
            live = self.cluster.apply(deployment, namespace=self.namespace)
            if name not in self._serving and self.cluster.read_service(self.namespace, name) is None:
                self.cluster.apply(service, namespace=self.namespace)  # the model's first version
            self.record(name, reason="Deploying", type="Normal",
                        message=f"rolling out {version[:12]} (digest {dep.digest[7:19]}) as "
                                f"Deployment {dname}")
        assert live is not None
        template = versions.template_of(deployment) or ""
        self._templates[dname] = template
        self._kept.setdefault(name, set()).add(dname)  # not deleted while it rolls out
        pods = self.cluster.pods(self.namespace, name, template=template)
        state = ko.rollout_state(live, pods)
        # its own pods ready is enough: no older pods of this Deployment to wait for
        ready = sum(1 for p in pods if ko.pod_view(p, live).ready) >= int(deployment["spec"]["replicas"])
        if state.phase is ko.Phase.FAILED:
            raise errors.ModelError(f"{version[:12]} did not become ready: {state.message}")
        if not ready and (state.phase is ko.Phase.PROGRESSING or state.commit != version):
            raise errors.Waiting(f"rolling out {version[:12]}: {state.message}",
                                 delay=self.rollout_poll)
        addresses = tuple(sorted(v.endpoint for v in (ko.pod_view(p, live) for p in pods)
                                 if v.ready and v.endpoint))
        if self._beside and self._serving.get(name, dname) != dname:  # a rollout's candidate
            self.cluster.apply(versions.candidate_service(service, name, dname, template),
                               namespace=self.namespace)
            self._alive[dname] = (self.clock(), True)
            return PodHandle(name, version, dep.digest,
                             f"http://{dname}.{self.namespace}.svc", dname, addresses)
        self._route(name, dname, template, service)
        self._alive[name] = (self.clock(), True)
        return PodHandle(name, version, dep.digest, self.endpoint(name), dname, addresses)

    def route(self, name: str, handle: PodHandle) -> None:
        """The Service of ``name`` selects ``handle``'s pods (the reconciler's ``on_deployed``:
        a rollback to a version kept warm switches it here)."""
        if not handle.deployment or self._serving.get(name) == handle.deployment:
            return
        template = self._templates.get(handle.deployment)
        if template is None:
            found = self.cluster.read_deployment_named(self.namespace, handle.deployment)
            template = versions.template_of(found or {})
        if template is None:
            return
        service = self.cluster.read_service(self.namespace, name)
        if service is None:
            return
        self._route(name, handle.deployment, template, service)

    def _route(self, name: str, dname: str, template: str, service: Mapping[str, Any]) -> None:
        """Point the Service at ``template``'s pods, mark the version it selected before as
        replaced (kept warm) and unmark this one, delete what is neither."""
        if "resourceVersion" not in (service.get("metadata") or {}):  # as rendered
            self.cluster.apply(versions.routed(service, name, template), namespace=self.namespace)
        elif versions.serving_template(service) != template:  # as read
            self.cluster.patch_service(self.namespace, name,
                                       {"spec": {"selector": versions.selector(name, template)}})
        self._serving[name] = dname
        kept = self._kept.setdefault(name, set())
        kept.add(dname)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for d in self.cluster.deployments(self.namespace, name):
            other = str(d["metadata"]["name"])
            if other == dname:
                if versions.replaced(d):
                    self.cluster.patch_deployment(self.namespace, other, {"metadata": {
                        "annotations": {versions.ANNOTATION_REPLACED: None}}})
            elif other not in kept:  # an attempt superseded, a leftover of an earlier run
                self.cluster.delete_deployment(self.namespace, other)
            elif not versions.replaced(d):
                self.cluster.patch_deployment(self.namespace, other, {"metadata": {
                    "annotations": {versions.ANNOTATION_REPLACED: now}}})

    def relaunch(self, handle: PodHandle) -> PodHandle | None:
        return None  # Kubernetes restarts pods itself

    def alive(self, handle: PodHandle) -> bool:
        """Its Deployment exists (read at most every ``alive_every`` seconds; True while the
        API server cannot say: an outage is no reason to redeploy)."""
        key = handle.deployment or handle.name
        seen = self._alive.get(key)
        if seen is not None and self.clock() - seen[0] < self.alive_every:
            return seen[1]
        try:
            there = self.cluster.read_deployment_named(
                self.namespace, handle.deployment or ko.object_name(handle.name)) is not None
        except errors.MlgitopsError:
            there = True
        self._alive[key] = (self.clock(), there)
        return there

    def draining(self, handle: PodHandle) -> None:
        """Nothing to do: the Service no longer selects its pods (`deploy` switched it), and
        they stay, marked replaced, until `stop`."""

    def stop(self, handle: PodHandle, *, grace: float = 5.0) -> None:
        """Delete the replaced version's Deployment (its pods go, with their grace period),
        unless it is the one serving (a later commit changed only its replicas or settings)."""
        dname = handle.deployment or ko.object_name(handle.name)
        if self._serving.get(handle.name) == dname:
            return
        self._kept.get(handle.name, set()).discard(dname)
        self._alive.pop(dname, None)
        for told in self.before_stop:
            told(handle.name)
        with contextlib.suppress(errors.MlgitopsError):  # away: the next switch deletes it
            self.cluster.delete_deployment(self.namespace, dname)
        if dname != ko.object_name(handle.name):  # a rollout's candidate Service, if any
            with contextlib.suppress(errors.MlgitopsError):
                self.cluster.delete_service_named(self.namespace, dname)

    def recover(self, records: Mapping[str, Mapping[str, Any]]) -> Recovery:
        """Adopt what each resource's status says serves (the Deployment its Service selects),
        when ready pods of it run; delete the versions the earlier run kept warm (their
        deadlines went with it). A rollout under way is left to the next `deploy`."""
        adopted: dict[str, PodHandle] = {}
        leftovers: list[Leftover] = []
        for cr in self.cluster.list_resources(self.namespace, label_selector=self.selector):
            name = str(cr["metadata"]["name"])
            st = cr.get("status") or {}
            served, digest = st.get("servedCommit"), st.get("servedDigest")
            if not served or not digest:
                continue
            found = self.cluster.deployments(self.namespace, name)
            selected = versions.serving_template(self.cluster.read_service(self.namespace, name))
            serving = next((d for d in found if versions.template_of(d) == selected), None) \
                if selected else versions.current(found, None)
            if serving is None or not any(p.ready and p.commit == served
                                          for p in self.cluster.list_pods(self.namespace, name)):
                continue
            dname = str(serving["metadata"]["name"])
            template = versions.template_of(serving)
            adopted[name] = PodHandle(name, str(served), str(digest), self.endpoint(name),
                                      "" if dname == ko.object_name(name) else dname)
            self._serving[name] = dname
            self._kept[name] = {dname}
            if template is not None:
                self._templates[dname] = template
            for d in found:  # kept warm by the earlier run, which took their deadlines along
                other = str(d["metadata"]["name"])
                if other != dname and versions.replaced(d) \
                        and self.cluster.delete_deployment(self.namespace, other):
                    leftovers.append(Leftover(name, ko.pinned_commit(d), other))
        lost = {n: "no ready pod of its recorded version runs" for n in records if n not in adopted}
        return Recovery(adopted, lost, leftovers)

    def prepare(self) -> None:
        """Nothing to warm: pods start where the scheduler puts them."""

    def close(self) -> None:
        """Nothing held."""

    def sweep(self) -> set[Hashable]:
        return set()  # what serves stays when the operator stops


def _same(current: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    meta, want = current.get("metadata") or {}, doc["metadata"]
    notes = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return (current.get("spec") == doc["spec"]
            and all(notes.get(k) == v for k, v in want["annotations"].items())
            and (ANNOTATION_PLACEHOLDER in notes) == (ANNOTATION_PLACEHOLDER in want["annotations"])
            and all(labels.get(k) == v for k, v in want["labels"].items())
            and [o.get("uid") for o in meta.get("ownerReferences") or []]
            == [o.get("uid") for o in want.get("ownerReferences") or []])
