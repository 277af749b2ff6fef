"""One ModelDeployment -> its Deployment and Service, and the resource's status and Events.

Plan before acting, with the local controller's own pieces: `core.plan.step` decides for this one
model (hold, keep, deploy) from what the resource asks, what its status says serves and what
failed before; a version to deploy is checked as data by
`controller.source.Source.materialize` (digest over regular files, paths, trust, quarantine by
content) before anything is applied; `core.status` says what the conditions become. A version
that is refused, or whose pods never become ready, is ``Stalled`` with the sentence, and the
Deployment keeps serving the previous version (``maxUnavailable: 0``). A failure is remembered
in the status (``failedCommit``/``failedDigest``, with ``failedInputs``: the operator's trust
policy and run, and ``failedRetry``) so the same version is not retried until Git, the policy or
the operator's run changes, or until someone sets the annotation ``mlgitops.io/retry`` to a new
value (as ``flux reconcile --force`` or Argo CD's refresh annotation do). Nothing here imports kopf: `handlers` maps `Result.retry` to ``TemporaryError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlgitops import errors, settings
from mlgitops.adapters import git
from mlgitops.adapters import kubernetes as k8s
from mlgitops.controller import source as source_mod
from mlgitops.core import k8s_objects as ko
from mlgitops.core import layout, manifest, plan, status
from mlgitops.operator import sync as sync_mod

ANNOTATION_RENDERED = "mlgitops.io/rendered"
#: Set to any new value to try a held version again (``kubectl annotate md NAME
#: mlgitops.io/retry=$(date +%s) --overwrite``).
ANNOTATION_RETRY = "mlgitops.io/retry"
#: While a rollout progresses the resource is looked at again this often (seconds).
ROLLOUT_POLL = 2.0


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Result:
    phase: str
    """Serving, Deploying, Held or Waiting."""
    message: str
    retry: float | None = None
    """Look again after this many seconds (a rollout in progress, a transient failure)."""


def _fingerprint(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Deployer:
    """Reconciles ModelDeployments of one namespace against the cluster."""

    def __init__(self, cluster: k8s.Cluster, source: source_mod.Source,
                 cfg: settings.OperatorSettings) -> None:
        self.cluster = cluster
        self.source = source
        self.cfg = cfg
        #: what, besides the version, decides whether it may deploy (a failure remembered
        #: under other inputs, e.g. before a restart or a trust policy change, is tried again)
        self.inputs = _fingerprint({"trust": sorted(cfg.trust.allow), "run": uuid.uuid4().hex})

    # -- what the resource says ------------------------------------------------------------

    def _version(self, body: Mapping[str, Any], name: str) -> str:
        """The commit to deploy: stamped by `sync`, else (Argo CD / Flux applied the manifest)
        the commit that last changed the model's paths at the branch head."""
        notes = (body.get("metadata") or {}).get("annotations") or {}
        commit = notes.get(ko.ANNOTATION_COMMIT)
        if commit:
            return str(commit)
        head = self.source.sync()
        found = git.last_change(self.source.clone, head, layout.model_paths(name)) if head else None
        if found is None:
            raise errors.ManifestError(
                f"{name}: no commit of {self.source.url} changes models/{name}; publish it there")
        return str(found)

    # -- one pass --------------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> Result:
        meta = body.get("metadata") or {}
        name, ns = str(meta["name"]), str(meta["namespace"])
        previous = dict(body.get("status") or {})
        st = status.ModelStatus.from_dict({**previous, "name": name}) if previous.get("name") \
            else status.ModelStatus(name=name)
        failed = (previous.get("failedCommit"), previous.get("failedDigest"))
        notes = meta.get("annotations") or {}
        retry = str(notes.get(ANNOTATION_RETRY) or "")
        if (str(previous.get("failedRetry") or "") != retry
                or previous.get("failedInputs") != self.inputs):
            failed = (None, None)  # asked for, or decided under other inputs: try it again
        result, st, failed, event = self._decide(body, name, ns, st, failed, notes)
        doc = {**st.to_dict(), "observedGeneration": meta.get("generation"),
               "failedCommit": failed[0], "failedDigest": failed[1], "phase": result.phase,
               "failedInputs": self.inputs if failed[0] else None,
               "failedRetry": retry if failed[0] else None}
        if {k: previous.get(k) for k in doc} != doc:
            self.cluster.patch_status(ns, name, doc)
        if event is not None:
            reason, message, kind = event
            self.cluster.record_event(body, reason=reason, message=message, type=kind)
        return result

    def _decide(
        self, body: Mapping[str, Any], name: str, ns: str, st: status.ModelStatus,
        failed: tuple[Any, Any], notes: Mapping[str, Any],
    ) -> tuple[Result, status.ModelStatus, tuple[Any, Any], tuple[str, str, str] | None]:
        t = now()
        serving = st.served_commit
        step = self._step(body, name, ns, st, failed, notes)
        if step.action is plan.Action.HOLD:
            d = step.desired
            version = d.version if d is not None and d.version else None
            quarantined = d is not None and d.quarantined
            if d is not None and d.deployment is not None:  # failed before: keep how it was held
                before = st.condition(status.ConditionType.STALLED)
                quarantined = before is not None and before.reason == "Quarantined"
            st, new = status.held(st, version=version, reason=step.reason, serving_version=serving,
                                  quarantined=quarantined, now=t)
            st = self._observe_serving(ns, name, st, t)
            return (Result("Held", step.reason), st, failed,
                    ("Held", f"{(version or '')[:12]}: {step.reason}".lstrip(": "), "Warning") if new
                    else None)
        assert step.desired is not None and step.desired.deployment is not None
        version, dep = step.desired.version, step.desired.deployment
        st = dataclasses.replace(st, desired_commit=version)
        try:
            if step.action is not plan.Action.KEEP:  # what serves was checked when it deployed
                if git.rev_parse(self.source.clone, version) is None:
                    self.source.sync()  # the resource is newer than this clone
                self.source.materialize(version, dep)
        except errors.Stalled as exc:
            st, _ = status.held(st, version=version, reason=str(exc), serving_version=serving,
                                quarantined=isinstance(exc, errors.QuarantinedError), now=t)
            return (Result("Held", str(exc)), st, (version, dep.digest),
                    ("DeployFailed", f"{version[:12]}: {exc}", "Warning"))
        except errors.Transient as exc:
            st = status.retry_pending(st, message=str(exc), serving_now=serving is not None, now=t)
            return Result("Waiting", str(exc), retry=10.0), st, failed, None
        owner = ko.Owner.of(body)
        current = self.cluster.read_deployment(ns, name)
        rendered = self._render(dep, version, owner, ns, current)
        current_print = ((current or {}).get("metadata") or {}).get("annotations", {}).get(ANNOTATION_RENDERED)
        event = None
        if current is None or current_print != rendered[0]["metadata"]["annotations"][ANNOTATION_RENDERED]:
            for obj in rendered:
                self.cluster.apply(obj, namespace=ns)
            reason = f"rolling out {version[:12]} (digest {dep.digest[7:19]})"
            st = status.deploying(st, version=version, reason=reason, serving_now=serving is not None, now=t)
            event = ("Deploying", reason, "Normal")
        state = self.cluster.rollout(ns, name)
        if state is None or state.phase is ko.Phase.PROGRESSING or state.commit != version:
            message = state.message if state is not None else "the Deployment was just created"
            st = status.deploying(st, version=version, reason=message, serving_now=serving is not None, now=t)
            return Result("Deploying", message, retry=ROLLOUT_POLL), st, failed, event
        if state.phase is ko.Phase.FAILED:
            st, _ = status.held(st, version=version, reason=state.message, quarantined=False,
                                serving_version=serving, now=t)
            return (Result("Held", state.message), st, (version, dep.digest),
                    ("RolloutFailed", state.message, "Warning"))
        endpoint = f"http://{ko.object_name(name)}.{ns}.svc"
        new = st.served_commit != version
        st = status.serving(st, version=version, digest=dep.digest, endpoint=endpoint, now=t,
                            applied=True)
        if new:
            event = ("Deployed", f"{version[:12]} serves ({state.ready_replicas} ready)", "Normal")
        return Result("Serving", f"serving {version[:12]}"), st, (None, None), event

    def _step(self, body: Mapping[str, Any], name: str, ns: str, st: status.ModelStatus,
              failed: tuple[Any, Any], notes: Mapping[str, Any]) -> plan.Step:
        """The same plan as the local controller's, for this one model (`core.plan.step`)."""
        held_commit = notes.get(sync_mod.ANNOTATION_HELD_COMMIT)
        if held_commit:
            reason = str(notes.get(sync_mod.ANNOTATION_HELD_REASON) or "the version is invalid")
            desired = plan.Desired(name, str(held_commit), None, reason,
                                   quarantined=notes.get(sync_mod.ANNOTATION_QUARANTINED) == "true")
        else:
            try:
                version = self._version(body, name)
            except errors.Stalled as exc:
                desired = plan.Desired(name, "", None, str(exc))
            else:
                try:
                    dep = manifest.parse({**body, "metadata": {"name": name}}, source=f"{ns}/{name}")
                    desired = plan.Desired(name, version, dep)
                except errors.Stalled as exc:
                    desired = plan.Desired(name, version, None, str(exc))
        live = (plan.Live(name, st.served_commit, st.served_digest, alive=True)
                if st.served_commit and st.served_digest else None)
        failure = None
        if failed[0] and failed[1]:
            reason = (st.condition(status.ConditionType.STALLED) or _no_reason()).message
            failure = plan.Failure(str(failed[1]), str(failed[0]), reason)
        return plan.step(name, desired, live, failure)

    def _observe_serving(self, ns: str, name: str, st: status.ModelStatus, t: str) -> status.ModelStatus:
        """While a newer version is held, what serves is what the Deployment's ready pods run."""
        state = self.cluster.rollout(ns, name)
        if state is not None and state.serving_commits:
            st = dataclasses.replace(st, served_commit=state.serving_commits[-1])
        return st

    def _render(self, dep: manifest.ModelDeployment, version: str, owner: ko.Owner,
                ns: str, current: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        options = ko.PodOptions(image=self.cfg.image, trust_allow=tuple(sorted(self.cfg.trust.allow)),
                                progress_deadline_seconds=self.cfg.progress_deadline_seconds,
                                grpc_port=self.cfg.grpc_port,
                                requests=dict(self.cfg.pod_requests),
                                limits=dict(self.cfg.pod_limits),
                                api_token_secret=self.cfg.api_token_secret)
        loadable = [t for t in dep.trusted_types if self.cfg.trust.admits(t)]
        src = ko.Source(self.cfg.repo_url, secret_name=self.cfg.secret_name)
        deployment = ko.deployment(dep, version, owner=owner, source=src, trusted_types=loadable,
                                   namespace=ns, options=options, current=current)
        service = ko.service(dep, owner=owner, namespace=ns, options=options)
        stamp = _fingerprint({"d": deployment, "s": service})
        deployment["metadata"].setdefault("annotations", {})[ANNOTATION_RENDERED] = stamp
        return [deployment, service]


def _no_reason() -> status.Condition:
    return status.Condition(status.ConditionType.STALLED, True, "InvalidVersion",
                            "this version failed before", "")
