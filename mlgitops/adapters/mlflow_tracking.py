"""MLflow tracking and registry: what serves, what was published, and every decision, as MLflow sees it.

One `MlflowClient` with an explicit tracking and registry URI; mlflow's global state (the
default tracking URI, active runs, autologging) is never touched. mlflow is imported on first
use (it takes seconds), so this module is cheap to import.

- A registered model per mlgitops model. Its versions are model *contents*: one per model
  digest, tagged ``mlgitops.commit`` (the commit that published it) and ``mlgitops.digest``;
  ``source`` is a copy of ``models/<name>/`` exported from Git at that commit (MLflow's
  registry points at files, not at a Git revision). A revert commit restores a content that is
  already a version: it is found by digest and tagged ``mlgitops.restoredBy``.
- The alias ``production`` names the version that serves.
- A run per decision in the experiment ``mlgitops/<model>``: per-feature scores as metrics,
  the policy thresholds and commits as params, kind/verdict/version as tags, the report as an
  artifact. Runs are found again by their ``mlgitops.decisionId`` tag, so recording the same
  decision twice (a retry) makes one run.

With a tracking server (an ``http(s)://`` URI) runs' artifacts go where the server keeps them;
a registered version's ``source`` still names the exported copy on the controller's disk.

MLflow errors become `mlgitops.errors.TrackingError` (transient: retried, never blocking).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgitops import errors, telemetry

telemetry.off()

PRODUCTION = "production"
TAG = "mlgitops."
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def default_uri(state_dir: Path) -> str:
    """``sqlite:///<state>/mlflow.db``: what ``mlflow ui --backend-store-uri`` opens, no server."""
    return f"sqlite:///{(state_dir / DB_FILE).resolve()}"


def experiment_name(model: str) -> str:
    return f"mlgitops/{model}"


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric or param key (other characters become ``_``)."""
    return _KEY.sub("_", name)[:250] or "_"


def _create_sqlite_aside(uri: str) -> None:
    """A new SQLite store gets its schema in a file aside, then renamed into place.

    MLflow's first open runs a dozen migrations (seconds, more under load); a process killed
    in the middle would leave a database that no MLflow can open again.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if str(path) in ("", ":memory:") or path.exists():
        return
    import os
    import tempfile

    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".init", dir=path.parent)
    os.close(fd)
    try:
        fresh = MlflowClient(tracking_uri=f"sqlite:///{aside}", registry_uri=f"sqlite:///{aside}")
        fresh.search_experiments(max_results=1)  # runs the migrations
        fresh.search_registered_models(max_results=1)
        if not path.exists():
            os.replace(aside, path)
    finally:
        Path(aside).unlink(missing_ok=True)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except errors.MlgitopsError:
        raise
    except Exception as exc:  # mlflow raises MlflowException, sqlalchemy, OSError, …
        raise errors.TrackingError(
            f"{action} failed ({type(exc).__name__}: {str(exc)[:300]}); deploys and reverts "
            "are unaffected and the record is retried"
        ) from exc


@dataclass(frozen=True)
class ModelVersion:
    version: str
    created: bool
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    created: bool
    artifacts: tuple[str, ...]


class Tracker:
    """One tracking store: ``uri`` (any MLflow tracking URI) and where local artifacts go."""

    def __init__(self, uri: str, *, artifact_root: Path) -> None:
        self.uri = uri
        self.artifact_root = artifact_root
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            with _translated(f"Opening the MLflow store {self.uri}"):
                from mlflow.tracking import MlflowClient

                _create_sqlite_aside(self.uri)
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @property
    def local(self) -> bool:
        """A store on this machine (SQLite, files): its artifacts go under ``artifact_root``."""
        return not self.uri.startswith(("http://", "https://", "databricks"))

    # registry -----------------------------------------------------------------------------
    def ensure_model(self, model: str) -> None:
        with _translated(f"Creating the registered model {model}"):
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_registered_model(model)
            except MlflowException:
                self.client.create_registered_model(
                    model, tags={f"{TAG}model": model},
                    description=(f"Versions of the mlgitops model {model}: one per model content "
                                 f"(digest); the alias {PRODUCTION} names the one that serves."),
                )

    def version_of(self, model: str, digest: str) -> ModelVersion | None:
        with _translated(f"Looking up {model} {digest[:19]} in the MLflow registry"):
            found = self.client.search_model_versions(
                f"name='{model}' and tag.`{TAG}digest`='{digest}'")
            if not found:
                return None
            v = min(found, key=lambda m: int(m.version))
            return ModelVersion(str(v.version), False, dict(v.tags))

    def ensure_version(self, model: str, *, commit: str, digest: str, source: Path,
                       description: str, tags: Mapping[str, str] | None = None) -> ModelVersion:
        """The registered version holding ``digest`` (created from ``source`` when new)."""
        self.ensure_model(model)
        existing = self.version_of(model, digest)
        if existing is not None:
            if existing.tags.get(f"{TAG}commit") != commit:
                self.tag_version(model, existing.version, {"restoredBy": commit})
            return existing
        all_tags = {f"{TAG}commit": commit, f"{TAG}digest": digest, f"{TAG}model": model,
                    **{f"{TAG}{k}": v for k, v in (tags or {}).items()}}
        with _translated(f"Registering {model} at {commit[:12]} in MLflow"):
            v = self.client.create_model_version(
                model, source=source.resolve().as_uri(), tags=all_tags, description=description)
            return ModelVersion(str(v.version), True, all_tags)

    def tag_version(self, model: str, version: str, tags: Mapping[str, str]) -> None:
        with _translated(f"Tagging {model} version {version}"):
            for k, v in tags.items():
                self.client.set_model_version_tag(model, version, f"{TAG}{k}", v)

    def set_alias(self, model: str, version: str, alias: str = PRODUCTION) -> None:
        with _translated(f"Moving the alias {alias} of {model} to version {version}"):
            self.client.set_registered_model_alias(model, alias, version)

    def alias(self, model: str, alias: str = PRODUCTION) -> ModelVersion | None:
        """The version ``alias`` names (None when the model or the alias does not exist)."""
        with _translated(f"Reading the alias {alias} of {model}"):
            from mlflow.exceptions import MlflowException

            try:
                v = self.client.get_model_version_by_alias(model, alias)
            except MlflowException:
                return None
            return ModelVersion(str(v.version), False, dict(v.tags))

    # runs ---------------------------------------------------------------------------------
    def experiment(self, model: str) -> str:
        name = experiment_name(model)
        with _translated(f"Creating the MLflow experiment {name}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            uri: str | None = None  # a tracking server decides where its artifacts go
            if self.local:
                location = (self.artifact_root / "experiments" / model).resolve()
                location.mkdir(parents=True, exist_ok=True)
                uri = location.as_uri()
            return str(self.client.create_experiment(
                name, artifact_location=uri, tags={f"{TAG}model": model}))

    def find_run(self, experiment_id: str, decision_id: str) -> str | None:
        with _translated(f"Looking up the run of decision {decision_id}"):
            found = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{TAG}decisionId` = '{decision_id}'",
                max_results=1)
            return str(found[0].info.run_id) if found else None

    def log_run(
        self,
        model: str,
        *,
        decision_id: str,
        run_name: str,
        at: float,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        metrics: Mapping[str, float],
        step: int = 0,
        artifacts: Sequence[tuple[Path, str]] = (),
    ) -> Run:
        """The run of one decision (created once; missing artifacts are added on a retry)."""
        eid = self.experiment(model)
        run_id = self.find_run(eid, decision_id)
        created = run_id is None
        with _translated(f"Logging decision {decision_id} to MLflow"):
            from mlflow.entities import Metric, Param

            ms = int(at * 1000)
            if run_id is None:
                run = self.client.create_run(
                    eid, start_time=ms, run_name=run_name,
                    tags={f"{TAG}decisionId": decision_id, **tags})
                run_id = str(run.info.run_id)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(metric_key(k), float(v), ms, step)
                             for k, v in metrics.items()],
                    params=[Param(metric_key(k), str(v)[:6000]) for k, v in params.items()],
                )
                self.client.set_terminated(run_id, end_time=ms)
            have = {a.path for folder in {f for _, f in artifacts}
                    for a in self.client.list_artifacts(run_id, folder)}
            logged = []
            for path, folder in artifacts:
                if f"{folder}/{path.name}" not in have:
                    self.client.log_artifact(run_id, str(path), folder)
                logged.append(f"{folder}/{path.name}")
            return Run(run_id, eid, created, tuple(logged))

    def runs(self, model: str) -> list[dict[str, Any]]:
        """The model's decision runs, newest first: run id, name, tags, params, metrics."""
        with _translated(f"Reading the MLflow runs of {model}"):
            found = self.client.get_experiment_by_name(experiment_name(model))
            if found is None:
                return []
            return [
                {"runId": r.info.run_id, "name": r.info.run_name, "start": r.info.start_time,
                 "tags": dict(r.data.tags), "params": dict(r.data.params),
                 "metrics": dict(r.data.metrics)}
                for r in self.client.search_runs([found.experiment_id],
                                                 order_by=["attributes.start_time DESC"],
                                                 max_results=1000)
            ]

    def versions(self, model: str) -> list[dict[str, Any]]:
        """The registered versions of ``model``, oldest first, with tags and aliases."""
        with _translated(f"Reading the registered versions of {model}"):
            found = self.client.search_model_versions(f"name='{model}'")
            aliases = dict(self.client.get_registered_model(model).aliases) if found else {}
            return sorted(
                ({"version": str(v.version), "source": v.source, "tags": dict(v.tags),
                  "aliases": sorted(a for a, n in aliases.items() if str(n) == str(v.version)),
                  "description": v.description} for v in found),
                key=lambda v: int(v["version"]))

