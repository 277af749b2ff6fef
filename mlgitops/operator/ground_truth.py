"""Ground truth on Kubernetes (issue 20): labels in, realized performance out.

- The operator's HTTP port answers ``POST /v2/models/{name}/feedback`` (authenticated like its
  webhook: HMAC with ``MLGITOPS_WEBHOOK_SECRET`` or the API token) for the models its
  repositories route, into one label store under its state directory (``<state>/labels``),
  which every repository's monitor reads; the rows are the pods' prediction logs as copied by
  each repository's `PodPredictions` (`Predictions` finds the right one by model name).
- `publish_performance` writes each routed model's realized (and estimated) performance into
  its ModelDeployment's ``status.performance`` (what ``mlgitops status`` shows locally), when
  it changed; it also keeps the copies of the pods' logs fresh while nobody reads them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

from mlgitops import errors, settings
from mlgitops.adapters import prediction_log, prediction_log_labels
from mlgitops.adapters.kubernetes import Cluster
from mlgitops.adapters.kubernetes.pod_predictions import PodPredictions
from mlgitops.controller import feedback as feedback_mod
from mlgitops.controller import performance
from mlgitops.controller import router as router_mod

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("mlgitops.operator")


def labels(state_dir: Path) -> prediction_log_labels.Labels:
    """The operator's label store (written by its feedback route only)."""
    return prediction_log_labels.Labels(state_dir / performance.LABELS,
                                        max_age_seconds=settings.prediction_log().max_age_seconds)


def pod_predictions(cluster: Cluster, namespace: str, state_dir: Path, *,
                    token: str | None) -> PodPredictions:
    """One repository's copy of its pods' prediction logs, under ``<state>/predictions``."""
    cfg = settings.prediction_log()
    return PodPredictions(cluster, namespace, state_dir / "predictions", token=token,
                          max_rows=cfg.max_rows, max_age_seconds=cfg.max_age_seconds)


def pod_env() -> tuple[tuple[str, str], ...]:
    """The operator's prediction-log settings that differ from the defaults, as the pods'
    environment (none: the pods keep the defaults, and their template does not change)."""
    cfg, default = settings.prediction_log(), settings.PredictionLogSettings()
    out = []
    if cfg.enabled != default.enabled:
        out.append(("MLGITOPS_PREDICTION_LOG", "on" if cfg.enabled else "off"))
    if cfg.max_rows != default.max_rows:
        out.append(("MLGITOPS_PREDICTION_LOG_ROWS", str(cfg.max_rows)))
    if cfg.max_age_seconds != default.max_age_seconds:
        out.append(("MLGITOPS_PREDICTION_LOG_MAX_AGE", str(cfg.max_age_seconds)))
    if cfg.interval_seconds != default.interval_seconds:
        out.append(("MLGITOPS_PREDICTION_LOG_INTERVAL", str(cfg.interval_seconds)))
    return tuple(out)


class Predictions:
    """The `PredictionSource` of the operator's port: the repository that routes a model."""

    def __init__(self, members: Callable[[], Sequence[tuple[router_mod.Router[Any],
                                                             PodPredictions]]]) -> None:
        self.members = members

    def names(self) -> set[str]:
        return {n for r, _ in self.members() for n in (*r.routes, *r.splits)}

    def read(self, name: str, *, since: float | None = None,
             ids: Sequence[str] | None = None) -> pd.DataFrame:
        for router, source in self.members():
            if name in router.routes or name in router.splits:
                return source.read(name, since=since, ids=ids)
        return prediction_log.read(Path(os.devnull) / "none")  # no such log: no rows


class OperatorFeedback(feedback_mod.Feedback):
    """`controller.feedback.Feedback` for the models the operator's repositories route."""

    def __init__(self, store: prediction_log_labels.Labels, source: Predictions, *,
                 webhook_secret: str | None, api_token: str | None) -> None:
        super().__init__(store, source, webhook_secret=webhook_secret, api_token=api_token)
        self.known = source

    def routes(self, models: Callable[[], Collection[str]]) -> list[Route]:
        return super().routes(self.known.names)


def publish_performance(cluster: Cluster, namespace: str, router: router_mod.Router[Any],
                        source: PodPredictions, store: prediction_log_labels.Labels,
                        stop: threading.Event, *, every: float = 10.0) -> None:
    """Until ``stop``: every ``every`` seconds, copy each routed model's pod logs and, when they
    or its labels changed, write its performance into its resource's ``status.performance``
    (the per-version figures on all kept rows, the label counts)."""
    written: dict[str, dict[str, Any]] = {}
    seen: dict[str, tuple[frozenset[str], tuple[tuple[str, int], ...]]] = {}
    while not stop.wait(every):
        for name in sorted({*router.routes, *router.splits}):
            try:
                source.sync(name)
                now = (source.fingerprint(name), _files(store.root / name))
                if seen.get(name) == now:
                    continue  # no new rows, no new labels: the figures are the same
                perf = performance.measure(name, source, store, window_seconds=None)
            except errors.ClusterError:
                continue  # the API server is away: the loop says so already
            except (errors.MlgitopsError, ValueError, KeyError, OSError) as exc:
                log.warning("performance of %s not measured: %s", name, exc)
                continue
            seen[name] = now
            doc = status_document(perf)
            if written.get(name) == doc:
                continue
            try:
                cluster.patch_status(namespace, name, {"performance": doc})
            except errors.MlgitopsError as exc:
                log.warning("performance of %s not written (tried again later): %s", name, exc)
                seen.pop(name, None)
                continue
            written[name] = doc


def _files(folder: Path) -> tuple[tuple[str, int], ...]:
    """The label files of a model, with their modification times."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()))
    except OSError:
        return ()


def status_document(perf: performance.Performance) -> dict[str, Any]:
    """``status.performance``: labels kept and unmatched, and per version its labelled rows
    and realized (and estimated) metrics."""
    doc = perf.to_dict()
    return {"task": doc["task"], "labels": doc["labels"], "unmatched": doc["unmatched"],
            "versions": [_finite(v) for v in doc["versions"]]}


def _finite(fig: dict[str, Any]) -> dict[str, Any]:
    """A figure without NaN or infinite metrics (JSON, so the API server, has none)."""
    return {k: ({m: x for m, x in v.items() if math.isfinite(x)}
                if k in ("realized", "estimated") else v) for k, v in fig.items()}
