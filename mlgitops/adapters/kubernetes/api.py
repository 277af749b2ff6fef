"""The Kubernetes API through the official client: the only importer of ``kubernetes`` (with the
operator package).

Plain dicts in and out (the JSON the API server speaks, as `core.k8s_objects` renders it): every
call asks for the raw response and decodes it, so no generated model class rewrites a field.
Writes of whole objects are server-side apply (field manager ``mlgitops``, forced: the operator
owns what it renders). Every failure is translated at this boundary, ``raise … from exc``:

=========================================  ==============================================
API answer                                 mlgitops error (what the loop does next)
=========================================  ==============================================
404 on a read / a delete                   ``None`` / ``False``
404 on a write                             ``errors.NotFound`` (Stalled: the owner is gone)
400, 422 (invalid object)                  ``errors.ManifestError`` with the server's words
401, 403                                   ``errors.ConfigError`` naming the missing permission
409 (changed meanwhile, already exists)    ``errors.Conflict`` (Transient: re-read, retry)
429, 5xx, no answer, connection refused    ``errors.ClusterError`` (Transient: back off)
=========================================  ==============================================

    with Cluster.from_kubeconfig(path) as cluster:          # or Cluster.connect(): in-cluster first
        cluster.apply(k8s_objects.deployment(...), namespace="models")
        state = cluster.rollout("models", "credit-risk")     # k8s_objects.RolloutState | None
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from mlgitops import errors
from mlgitops.adapters import clock as system_clock
from mlgitops.adapters.kubernetes.workload_calls import MERGE as MERGE
from mlgitops.adapters.kubernetes.workload_calls import WorkloadCalls
from mlgitops.core import clock as core_clock
from mlgitops.core import manifest, source_spec

APPLY = "application/apply-patch+yaml"
FIELD_MANAGER = "mlgitops"
#: An Event's message is cut here (the API's limit for events.k8s.io notes is 1 KiB).
MAX_EVENT_MESSAGE = 1024


@dataclass(frozen=True)
class Kind:
    """A custom resource the operator reads and writes."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


MODEL_DEPLOYMENT = Kind(
    manifest.GROUP, manifest.API_VERSION.split("/")[1], manifest.PLURAL, manifest.KIND
)
MODEL_REPOSITORY = Kind(
    source_spec.GROUP, source_spec.VERSION, source_spec.PLURAL, source_spec.KIND
)
#: The Gateway API's route, rendered for a rollout when the cluster has the CRD (`routes`).
HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
_CUSTOM = {(k.api_version, k.kind): k for k in (MODEL_DEPLOYMENT, MODEL_REPOSITORY, HTTP_ROUTE)}


def _server_words(exc: ApiException) -> str:
    """The ``message`` of the Status the API server answered with (else its reason)."""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return str(exc.reason or f"HTTP {exc.status}").strip()


def translate(exc: ApiException, *, what: str) -> errors.MlgitopsError:
    """The mlgitops error for an API answer (see the module docstring's table)."""
    status = int(exc.status or 0)
    said = _server_words(exc)
    if status == 404:
        return errors.NotFound(f"{what}: not found ({said}); it was deleted meanwhile, or its namespace does not exist")
    if status in (400, 422):
        return errors.ManifestError(f"{what}: the API server refused it: {said}")
    if status in (401, 403):
        return errors.ConfigError(
            f"{what}: {said}; give the operator's ServiceAccount this permission "
            "(see manifests/install/rbac.yaml)"
        )
    if status == 409:
        return errors.Conflict(f"{what}: {said}; it changed meanwhile: read it again and retry")
    if status == 429 or status >= 500 or status == 0:
        return errors.ClusterError(
            f"{what}: the Kubernetes API server answered {status or 'nothing'} ({said}); retrying later"
        )
    return errors.ClusterError(f"{what}: unexpected answer {status} from the API server ({said})")


class Cluster(WorkloadCalls):
    """One Kubernetes API connection and what the operator does through it."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
        component: str = "mlgitops-operator",
        clock: core_clock.Clock = system_clock.SYSTEM,
    ) -> None:
        self.api = api
        self.clock = clock
        """Stamps the Events this connection records."""
        self.field_manager = field_manager
        self.timeout = timeout
        self.component = component
        self.instance = socket.gethostname()
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    # -- connecting ------------------------------------------------------------------------

    @staticmethod
    def _configuration() -> client.Configuration:
        cfg = client.Configuration()
        cfg.retries = 1  # the loop retries with back-off; a dead server fails fast
        return cfg

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, *, context: str | None = None, **kw: Any
    ) -> Cluster:
        """From a kubeconfig file (None: ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl)."""
        cfg = cls._configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=None if path is None else str(path), context=context,
                client_configuration=cfg, persist_config=False,
            )  # fmt: skip
        except (ConfigException, OSError, ValueError) as exc:
            where = path or "the default kubeconfig"
            raise errors.ConfigError(f"cannot use {where} to reach Kubernetes: {exc}") from exc
        return cls(client.ApiClient(cfg), **kw)

    @classmethod
    def in_cluster(cls, **kw: Any) -> Cluster:
        """From the pod's ServiceAccount (token, CA and the service address Kubernetes gives it)."""
        cfg = cls._configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise errors.ConfigError(
                f"not running in a Kubernetes pod ({exc}); pass a kubeconfig instead"
            ) from exc
        return cls(client.ApiClient(cfg), **kw)

    @classmethod
    def connect(
        cls, kubeconfig: str | os.PathLike[str] | None = None, *, context: str | None = None, **kw: Any
    ) -> Cluster:
        """``kubeconfig`` when given; else in-cluster when in a pod; else the default kubeconfig."""
        if kubeconfig is not None:
            return cls.from_kubeconfig(kubeconfig, context=context, **kw)
        try:
            return cls.in_cluster(**kw)
        except errors.ConfigError:
            return cls.from_kubeconfig(None, context=context, **kw)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answers(self) -> bool:
        """True when the API server answers (its version), False when it cannot be reached."""
        try:
            self._call("read the API server's version", client.VersionApi(self.api).get_code)
        except errors.MlgitopsError:
            return False
        return True

    # -- one call ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` without the client's model classes: the decoded JSON answer."""
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            raw = response.data
        except ApiException as exc:
            raise translate(exc, what=what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise errors.ClusterError(
                f"{what}: the Kubernetes API server cannot be reached ({exc}); retrying later"
            ) from exc
        try:
            return json.loads(raw) if raw else {}
        except ValueError as exc:
            raise errors.ClusterError(f"{what}: the API server answered something not JSON") from exc

    def _read(
        self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any] | None:
        """Like `_call`, but None for 404."""
        try:
            return dict(self._call(what, fn, *args, **kwargs))
        except errors.NotFound:
            return None

    # -- owned workloads: Deployment, Service ------------------------------------------------

    def apply(
        self, obj: Mapping[str, Any], *, namespace: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of a Deployment, a Service, a ModelDeployment or a ModelRepository.

        ``namespace`` (or the object's ``metadata.namespace``) says where. Returns the object as
        stored (as it would be, with ``dry_run``).
        """
        meta = obj.get("metadata") or {}
        ns = namespace or meta.get("namespace")
        name = meta.get("name")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not ns or not name:
            raise errors.ConfigError(f"a {kind} to apply needs metadata.name and a namespace")
        body = {**obj, "metadata": {**meta, "namespace": ns}}
        what = f"apply {kind} {ns}/{name}"
        opts: dict[str, Any] = {
            "field_manager": self.field_manager, "force": True, "_content_type": APPLY,
        }  # fmt: skip
        if dry_run:
            opts["dry_run"] = "All"
        if (api_version, kind) == ("apps/v1", "Deployment"):
            return dict(self._call(what, self._apps.patch_namespaced_deployment, name, ns, body, **opts))
        if (api_version, kind) == ("v1", "Service"):
            return dict(self._call(what, self._core.patch_namespaced_service, name, ns, body, **opts))
        custom = _CUSTOM.get((str(api_version), str(kind)))
        if custom is not None:
            return dict(self._call(
                what, self._custom.patch_namespaced_custom_object,
                custom.group, custom.version, ns, custom.plural, name, body, **opts,
            ))  # fmt: skip
        raise errors.ConfigError(f"{kind} ({api_version}) is not an object mlgitops applies")

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded (None: no such Secret)."""
        doc = self._read(f"read Secret {namespace}/{name}", self._core.read_namespaced_secret,
                         name, namespace)
        if doc is None:
            return None
        try:
            return {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
        except (ValueError, TypeError) as exc:
            raise errors.ConfigError(f"Secret {namespace}/{name}: data is not base64 ({exc})") from exc

    # -- custom resources: ModelDeployment (default), ModelRepository --------------------------

    def get_resource(
        self, namespace: str, name: str, *, kind: Kind = MODEL_DEPLOYMENT
    ) -> dict[str, Any] | None:
        return self._read(
            f"read {kind.kind} {namespace}/{name}", self._custom.get_namespaced_custom_object,
            kind.group, kind.version, namespace, kind.plural, name,
        )  # fmt: skip

    def list_resources(
        self,
        namespace: str | None,
        *,
        kind: Kind = MODEL_DEPLOYMENT,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (None: every namespace)."""
        opts = {"label_selector": label_selector} if label_selector else {}
        if namespace is None:
            doc = self._call(
                f"list {kind.plural}", self._custom.list_cluster_custom_object,
                kind.group, kind.version, kind.plural, **opts,
            )  # fmt: skip
        else:
            doc = self._call(
                f"list {kind.plural} in {namespace}", self._custom.list_namespaced_custom_object,
                kind.group, kind.version, namespace, kind.plural, **opts,
            )  # fmt: skip
        return list(doc.get("items") or [])

    def create_resource(
        self, namespace: str, body: Mapping[str, Any], *, kind: Kind = MODEL_DEPLOYMENT
    ) -> dict[str, Any]:
        """Create; ``errors.Conflict`` when it already exists."""
        name = (body.get("metadata") or {}).get("name")
        return dict(self._call(
            f"create {kind.kind} {namespace}/{name}", self._custom.create_namespaced_custom_object,
            kind.group, kind.version, namespace, kind.plural, dict(body),
            field_manager=self.field_manager,
        ))  # fmt: skip

    def patch_resource(
        self,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        kind: Kind = MODEL_DEPLOYMENT,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386); with ``resource_version`` only if nothing changed since
        (else ``errors.Conflict``)."""
        body = _with_version(patch, resource_version)
        return dict(self._call(
            f"patch {kind.kind} {namespace}/{name}", self._custom.patch_namespaced_custom_object,
            kind.group, kind.version, namespace, kind.plural, name, body,
            field_manager=self.field_manager, _content_type=MERGE,
        ))  # fmt: skip

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        kind: Kind = MODEL_DEPLOYMENT,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``status`` into the status subresource (the spec is never touched); lists such
        as ``conditions`` are replaced whole. ``errors.NotFound`` when the resource is gone."""
        body = _with_version({"status": dict(status)}, resource_version)
        return dict(self._call(
            f"patch {kind.kind} {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            kind.group, kind.version, namespace, kind.plural, name, body,
            field_manager=self.field_manager, _content_type=MERGE,
        ))  # fmt: skip

    def delete_resource(self, namespace: str, name: str, *, kind: Kind = MODEL_DEPLOYMENT) -> bool:
        """Delete (owned Deployments and Services follow by garbage collection); False if absent."""
        done = self._read(
            f"delete {kind.kind} {namespace}/{name}", self._custom.delete_namespaced_custom_object,
            kind.group, kind.version, namespace, kind.plural, name,
            propagation_policy="Background",
        )  # fmt: skip
        return done is not None

    # -- events ----------------------------------------------------------------------------------

    def record_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type: str = "Normal",
        action: str | None = None,
    ) -> dict[str, Any]:
        """A Kubernetes Event about ``involved`` (an object as read, e.g. the ModelDeployment).

        The same (object, type, reason, message) again bumps ``count`` and ``lastTimestamp`` of
        one Event instead of adding another, as kubectl and client-go do; ``kubectl describe``
        shows it.
        """
        if type not in ("Normal", "Warning"):
            raise ValueError(f"an Event's type is Normal or Warning, not {type!r}")
        meta = involved.get("metadata") or {}
        namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
        if not namespace or not name or not uid:
            raise errors.ConfigError("an Event needs the object as read (namespace, name and uid)")
        text = message if len(message) <= MAX_EVENT_MESSAGE else message[: MAX_EVENT_MESSAGE - 1] + "…"
        key = hashlib.sha256(f"{uid}\0{type}\0{reason}\0{text}".encode()).hexdigest()[:16]
        event_name = f"{name}.{key}"
        what = f"record Event {reason} on {involved.get('kind')} {namespace}/{name}"
        old = self._read(what, self._core.read_namespaced_event, event_name, namespace)
        now = system_clock.now_iso(self.clock)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": text,
            "type": type,
            "count": int((old or {}).get("count") or 0) + 1,
            "firstTimestamp": (old or {}).get("firstTimestamp") or now,
            "lastTimestamp": now,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        if action:
            body["action"] = action
        return dict(self._call(
            what, self._core.patch_namespaced_event, event_name, namespace, body,
            field_manager=self.field_manager, force=True, _content_type=APPLY,
        ))  # fmt: skip

    def events(self, involved: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Events about ``involved`` (by uid), oldest first."""
        meta = involved.get("metadata") or {}
        doc = self._call(
            f"list Events of {meta.get('namespace')}/{meta.get('name')}",
            self._core.list_namespaced_event, meta.get("namespace"),
            field_selector=f"involvedObject.uid={meta.get('uid')}",
        )  # fmt: skip
        items = list(doc.get("items") or [])
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or ""))


def _with_version(patch: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
    body = dict(patch)
    if resource_version is not None:
        body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
    return body

