"""The ModelDeployment resource: one schema for the local runtime and the Kubernetes operator.

``SCHEMA`` is the single source of the resource's shape; the CustomResourceDefinition in
``manifests/crd/`` is generated from it (``mlgitops crd``) and a test keeps the two equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

import jsonschema

from mlgitops import errors
from mlgitops.core.performance import spec as performance_spec
from mlgitops.core.performance.spec import PerformancePolicy

ModelName = NewType("ModelName", str)
Digest = NewType("Digest", str)

API_VERSION = "mlgitops.io/v1alpha1"
KIND = "ModelDeployment"
GROUP = "mlgitops.io"
PLURAL = "modeldeployments"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
TYPE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"

#: The largest number of seconds a manifest may give (a cooldown, a revert period).
YEAR_SECONDS = 366 * 86400

DriftAction = Literal["revert", "alert", "none"]

_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "additionalProperties": False,
    "properties": {
        "model": {
            "type": "object",
            "required": ["path", "digest"],
            "additionalProperties": False,
            "properties": {
                "path": {"type": "string", "pattern": r"^models/[a-z0-9][-a-z0-9]*$"},
                "digest": {"type": "string", "pattern": DIGEST_PATTERN},
                "trustedTypes": {
                    "type": "array",
                    "items": {"type": "string", "pattern": TYPE_PATTERN},
                },
            },
        },
        "serving": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 1, "maximum": 64},
                "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "batching": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "maxBatchSize": {"type": "integer", "minimum": 1, "maximum": 100000},
                        "maxDelayMs": {"type": "number", "minimum": 0, "maximum": 1000},
                    },
                },
            },
        },
        "drift": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "windowRows": {"type": "integer", "minimum": 10, "maximum": 10_000_000},
                "minRows": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                "datasetShare": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "consecutiveWindows": {"type": "integer", "minimum": 1, "maximum": 100},
                "cooldownSeconds": {"type": "number", "minimum": 0, "maximum": YEAR_SECONDS},
                "maxReverts": {"type": "integer", "minimum": 0, "maximum": 1000},
                "revertPeriodSeconds": {"type": "number", "minimum": 1, "maximum": YEAR_SECONDS},
                "action": {"type": "string", "enum": ["revert", "alert", "none"]},
                "attribution": {"type": "string", "enum": ["previous-baseline", "none"]},
            },
        },
        "rollout": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "strategy": {"type": "string", "enum": ["direct"]},
                "scaleDownDelaySeconds": {"type": "number", "minimum": 0,
                                          "maximum": YEAR_SECONDS},
            },
        },
        "performance": performance_spec.SCHEMA,
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": [API_VERSION]},
        "kind": {"type": "string", "enum": [KIND]},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}},
        },
        "spec": _SPEC_SCHEMA,
    },
}


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 64
    max_delay_ms: float = 2.0


@dataclass(frozen=True)
class Serving:
    replicas: int = 1
    workers: int = 1
    batching: Batching = field(default_factory=Batching)


@dataclass(frozen=True)
class DriftPolicy:
    window_rows: int = 1000
    min_rows: int = 300
    dataset_share: float = 0.5
    consecutive_windows: int = 2
    cooldown_seconds: float = 600.0
    max_reverts: int = 3
    revert_period_seconds: float = 86400.0
    action: DriftAction = "revert"
    attribution: Literal["previous-baseline", "none"] = "previous-baseline"


@dataclass(frozen=True)
class Rollout:
    """How a new version takes over from the one serving (``spec.rollout``).

    ``direct``: the new version takes all traffic once ready. The replaced version stays
    warm for ``scale_down_delay_seconds`` (as Argo Rollouts' ``scaleDownDelaySeconds``), so
    that a revert switches traffic to something already ready.
    """

    strategy: Literal["direct"] = "direct"
    scale_down_delay_seconds: float = 600.0


@dataclass(frozen=True)
class ModelDeployment:
    """A validated manifest: what should serve, and how it is watched."""

    name: ModelName
    model_path: str
    digest: Digest
    trusted_types: tuple[str, ...] = ()
    serving: Serving = field(default_factory=Serving)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    rollout: Rollout = field(default_factory=Rollout)
    performance: PerformancePolicy = field(default_factory=PerformancePolicy)

    def to_dict(self) -> dict[str, Any]:
        """The manifest document (what ``parse`` reads back)."""
        b = self.serving.batching
        d = self.drift
        doc: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name},
            "spec": {
                "model": {
                    "path": self.model_path,
                    "digest": self.digest,
                    "trustedTypes": list(self.trusted_types),
                },
                "serving": {
                    "replicas": self.serving.replicas,
                    "workers": self.serving.workers,
                    "batching": {"maxBatchSize": b.max_batch_size, "maxDelayMs": b.max_delay_ms},
                },
                "drift": {
                    "windowRows": d.window_rows,
                    "minRows": d.min_rows,
                    "datasetShare": d.dataset_share,
                    "consecutiveWindows": d.consecutive_windows,
                    "cooldownSeconds": d.cooldown_seconds,
                    "maxReverts": d.max_reverts,
                    "revertPeriodSeconds": d.revert_period_seconds,
                    "action": d.action,
                    "attribution": d.attribution,
                },
                "rollout": {
                    "strategy": self.rollout.strategy,
                    "scaleDownDelaySeconds": self.rollout.scale_down_delay_seconds,
                },
            },
        }
        if self.performance != PerformancePolicy():
            doc["spec"]["performance"] = self.performance.to_dict()
        return doc


_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _where(path: Any) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _not_finite(value: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], float] | None:
    """The first number in ``value`` that is NaN or infinite (YAML ``.nan``, ``.inf``), if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _not_finite(v, (*path, str(k)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _not_finite(v, (*path, i))
            if found is not None:
                return found
    return None


def parse(document: Any, *, source: str) -> ModelDeployment:
    """Validate a parsed YAML document; raise ManifestError naming ``source`` and the field."""
    if not isinstance(document, Mapping):
        raise errors.ManifestError(
            f"{source}: expected a ModelDeployment mapping, got {type(document).__name__}; "
            "see manifests/crd/ for the schema"
        )
    bad = _not_finite(document)
    if bad is not None:  # JSON Schema compares NaN as neither below nor above any bound
        where, value = bad
        spelled = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        raise errors.ManifestError(
            f"{source}: field {_where(where)}: {spelled} is not a finite number; give a plain "
            "number within the field's range (see manifests/crd/) and commit again")
    performance_spec.check_metric_names(document, source=source)
    problems = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise errors.ManifestError(
            f"{source}: field {_where(first.absolute_path)}: {first.message}{more}; "
            "fix the manifest and commit again"
        )
    spec = document["spec"]
    model = spec["model"]
    name = ModelName(document["metadata"]["name"])
    expected_path = f"models/{name}"
    if model["path"] != expected_path:
        raise errors.ManifestError(
            f"{source}: field spec.model.path: is {model['path']!r} but a model named "
            f"{name!r} lives at {expected_path!r}; rename one of them"
        )
    srv = spec.get("serving", {})
    bat = srv.get("batching", {})
    dr = spec.get("drift", {})
    defaults = DriftPolicy()
    drift = DriftPolicy(
        window_rows=int(dr.get("windowRows", defaults.window_rows)),
        min_rows=int(dr.get("minRows", defaults.min_rows)),
        dataset_share=float(dr.get("datasetShare", defaults.dataset_share)),
        consecutive_windows=int(dr.get("consecutiveWindows", defaults.consecutive_windows)),
        cooldown_seconds=float(dr.get("cooldownSeconds", defaults.cooldown_seconds)),
        max_reverts=int(dr.get("maxReverts", defaults.max_reverts)),
        revert_period_seconds=float(dr.get("revertPeriodSeconds", defaults.revert_period_seconds)),
        action=dr.get("action", defaults.action),
        attribution=dr.get("attribution", defaults.attribution),
    )
    if drift.min_rows > drift.window_rows:
        raise errors.ManifestError(
            f"{source}: field spec.drift.minRows: {drift.min_rows} exceeds windowRows "
            f"{drift.window_rows}; a window could never be conclusive"
        )
    return ModelDeployment(
        name=name,
        model_path=model["path"],
        digest=Digest(model["digest"]),
        trusted_types=tuple(model.get("trustedTypes", ())),
        serving=Serving(
            replicas=int(srv.get("replicas", 1)),
            workers=int(srv.get("workers", 1)),
            batching=Batching(
                max_batch_size=int(bat.get("maxBatchSize", 64)),
                max_delay_ms=float(bat.get("maxDelayMs", 2.0)),
            ),
        ),
        drift=drift,
        rollout=_rollout(spec.get("rollout", {})),
        performance=performance_spec.parse(spec.get("performance", {}), source=source),
    )


def _rollout(ro: Mapping[str, Any]) -> Rollout:
    defaults = Rollout()
    return Rollout(
        strategy=ro.get("strategy", defaults.strategy),
        scale_down_delay_seconds=float(
            ro.get("scaleDownDelaySeconds", defaults.scale_down_delay_seconds)),
    )


def valid_name(name: str) -> bool:
    """True when ``name`` can name a model (a DNS label, as Kubernetes requires)."""
    return re.fullmatch(NAME_PATTERN, name) is not None


def openapi_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Schema (2020-12, what ``parse`` validates with) as a CRD's OpenAPI v3.0 schema.

    Kubernetes reads OpenAPI 3.0: ``exclusiveMinimum``/``exclusiveMaximum`` are booleans beside
    ``minimum``/``maximum``, and a structural schema may not say ``additionalProperties: false``
    (the API server prunes unknown fields instead; ``parse`` still refuses them).
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {k: openapi_schema(v) for k, v in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            out[key] = openapi_schema(value)
        else:
            out[key] = value
    return out


#: What ``kubectl get modeldeployments`` shows (the operator writes these status fields).
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Commit", "type": "string", "jsonPath": ".status.servedCommit"},
    {"name": "Drift", "type": "string", "jsonPath": ".status.drift.verdict"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of ModelDeployment, generated from ``SCHEMA``."""
    return custom_resource_definition(
        kind=KIND, plural=PLURAL, singular="modeldeployment", short_names=["md"],
        version="v1alpha1", spec_schema=openapi_schema(_SPEC_SCHEMA),
        printer_columns=PRINTER_COLUMNS)


def custom_resource_definition(*, kind: str, plural: str, singular: str,
                               short_names: list[str], version: str,
                               spec_schema: dict[str, Any],
                               printer_columns: list[dict[str, Any]]) -> dict[str, Any]:
    """The one CRD builder (ModelDeployment, ModelRepository): namespaced, one served and
    stored version, a status subresource whose fields the operator owns."""
    status_schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
            },
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema, "status": status_schema},
                            "required": ["spec"],
                        }
                    },
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in printer_columns],
                }
            ],
        },
    }
