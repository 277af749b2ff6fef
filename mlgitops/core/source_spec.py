"""The ModelRepository resource: which Git repository and branch the operator deploys from.

Like Flux's ``GitRepository``: one object per model repository, in the namespace the models
deploy to. ``SCHEMA`` is its single source; the CustomResourceDefinition under
``manifests/install/`` is generated from it (`crd`) and a test keeps the two equal.

```yaml
apiVersion: mlgitops.io/v1alpha1
kind: ModelRepository
metadata: {name: credit-models}
spec:
  url: https://git.example.com/team/credit-models.git
  branch: main                                  # default main
  interval: 1m                                  # poll period (webhooks make it faster); default 1m
  paths: [manifests/credit-*.yaml]              # optional: the manifests it deploys (globs)
  targetNamespace: models                       # optional: where its models go (default: here)
  secretRef: {name: credit-models-git}          # optional: Git credentials
  webhookSecretRef: {name: credit-models-hook}  # optional: HMAC secret of push webhooks
```

Secrets (same namespace): ``secretRef`` holds ``username`` + ``password`` (HTTPS) or
``ssh-privatekey`` + ``known_hosts`` (SSH); the operator uses it and names it in the pods it
renders (see `core.k8s_objects`). ``webhookSecretRef`` holds ``token``: the shared secret of
``X-Hub-Signature-256``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from mlgitops import errors
from mlgitops.core import manifest

KIND = "ModelRepository"
PLURAL = "modelrepositories"
GROUP = manifest.GROUP
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_BRANCH = "main"
DEFAULT_INTERVAL = "1m"
SECRET_USERNAME = "username"
SECRET_PASSWORD = "password"
SECRET_SSH_KEY = "ssh-privatekey"
SECRET_KNOWN_HOSTS = "known_hosts"
WEBHOOK_TOKEN = "token"

#: https://, http://, ssh://, file://, scp-like user@host:path, or an absolute path.
URL_PATTERN = r"^(https?://|ssh://|file://|/|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)[^\s]+$"
BRANCH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
INTERVAL_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
#: A glob of manifest paths: ``manifests/credit.yaml``, ``manifests/credit-*.yaml``.
PATH_PATTERN = r"^manifests/[A-Za-z0-9*?\[\]._-]{1,200}$"
_SECRET_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "pattern": manifest.NAME_PATTERN}},
}

_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "pattern": URL_PATTERN, "maxLength": 2048},
        "branch": {"type": "string", "pattern": BRANCH_PATTERN},
        "interval": {"type": "string", "pattern": INTERVAL_PATTERN},
        "paths": {"type": "array", "maxItems": 64,
                  "items": {"type": "string", "pattern": PATH_PATTERN}},
        "targetNamespace": {"type": "string", "pattern": manifest.NAME_PATTERN},
        "secretRef": _SECRET_REF,
        "webhookSecretRef": _SECRET_REF,
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
            "properties": {"name": {"type": "string", "pattern": manifest.NAME_PATTERN}},
        },
        "spec": _SPEC_SCHEMA,
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RepositorySource:
    """A validated ModelRepository spec."""

    name: str
    url: str
    branch: str = DEFAULT_BRANCH
    interval_seconds: float = 60.0
    secret_name: str | None = None
    webhook_secret_name: str | None = None
    paths: tuple[str, ...] = ()
    """Globs of the manifest paths it deploys; empty: every manifest."""
    target_namespace: str | None = None
    """Where its ModelDeployments go (None: the ModelRepository's own namespace)."""


def interval_seconds(text: str) -> float:
    """``1m30s`` -> 90.0 (Go duration units ms, s, m, h)."""
    if not re.fullmatch(INTERVAL_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 1m or 1h30m")
    return sum(
        float(n) * _UNITS[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )


def parse(document: Any, *, source: str) -> RepositorySource:
    """Validate a ModelRepository object; ManifestError names ``source`` and the field."""
    if not isinstance(document, Mapping):
        raise errors.ManifestError(f"{source}: expected a {KIND} mapping, got {type(document).__name__}")
    problems = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise errors.ManifestError(f"{source}: field {where}: {first.message}; fix the {KIND}")
    spec = document["spec"]
    seconds = interval_seconds(spec.get("interval", DEFAULT_INTERVAL))
    if seconds < 1:
        raise errors.ManifestError(
            f"{source}: field spec.interval: {spec['interval']!r} is under a second; poll at most "
            "once a second (webhooks notify at once)"
        )
    return RepositorySource(
        name=str(document["metadata"]["name"]),
        url=str(spec["url"]),
        branch=str(spec.get("branch", DEFAULT_BRANCH)),
        interval_seconds=seconds,
        secret_name=(spec.get("secretRef") or {}).get("name"),
        webhook_secret_name=(spec.get("webhookSecretRef") or {}).get("name"),
        paths=tuple(str(p) for p in spec.get("paths") or ()),
        target_namespace=spec.get("targetNamespace"),
    )


#: What ``kubectl get modelrepositories`` shows (``status.commit``: the branch head last synced).
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "URL", "type": "string", "jsonPath": ".spec.url"},
    {"name": "Branch", "type": "string", "jsonPath": ".spec.branch"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Commit", "type": "string", "jsonPath": ".status.commit"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of ModelRepository, generated from ``SCHEMA``."""
    spec_schema = manifest.openapi_schema(_SPEC_SCHEMA)
    props = dict(spec_schema["properties"])
    props["branch"] = {**props["branch"], "default": DEFAULT_BRANCH}
    props["interval"] = {**props["interval"], "default": DEFAULT_INTERVAL}
    spec_schema["properties"] = props
    return manifest.custom_resource_definition(
        kind=KIND, plural=PLURAL, singular="modelrepository", short_names=["mrepo"],
        version=VERSION, spec_schema=spec_schema, printer_columns=PRINTER_COLUMNS)
