"""Where things live in a model repository (paths relative to its root)."""

from __future__ import annotations

MODELS = "models"
MANIFESTS = "manifests"
QUARANTINE = "quarantine.yaml"
#: The controller's state before it moved into the clone's git directory: a pushed commit could
#: write there (a pull or a rebase does), so it is never read; a clone that tracks it is refused.
LEGACY_STATE_DIR = ".mlgitops"
#: The controller's state: ``<git dir>/mlgitops`` of the clone it runs on, where no push, pull
#: or checkout writes (``settings.state_dir`` resolves it; ``MLGITOPS_STATE_DIR`` overrides).
STATE_DIR_IN_GIT = "mlgitops"
BASELINE = "baseline.json"
REFERENCE = "reference.parquet"
PUBLISH_INFO = "mlgitops.json"
BRANCH = "main"

#: Trailers on commits made by mlgitops.
TRAILER_MODEL = "Mlgitops-Model"
TRAILER_DIGEST = "Mlgitops-Digest"
TRAILER_REVERTS = "Mlgitops-Reverts"
TRAILER_REPORT = "Mlgitops-Report"
TRAILER_REPORT_ID = "Mlgitops-Report-Id"
TRAILER_ACTION = "Mlgitops-Action"


def model_path(name: str) -> str:
    return f"{MODELS}/{name}"


def manifest_path(name: str) -> str:
    return f"{MANIFESTS}/{name}.yaml"


def model_paths(name: str) -> tuple[str, str]:
    """The two paths a model version consists of."""
    return (model_path(name), manifest_path(name))


def manifest_name(path: str) -> str | None:
    """``manifests/x.yaml`` -> ``x``; None for anything else (subfolders such as crd/ too)."""
    parts = path.split("/")
    if len(parts) != 2 or parts[0] != MANIFESTS or not parts[1].endswith(".yaml"):
        return None
    return parts[1][: -len(".yaml")]
