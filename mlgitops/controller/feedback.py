"""Labels back: ``POST /v2/models/{name}/feedback`` on the gateway, and ``GET /metrics``.

The body is ``{"ids": [...], "labels": [...]}`` (the ids the inference responses carried, and
one label each: a number, a string or a boolean), at most `MAX_LABELS` per request. A
repeated id is an update (its latest label counts, once); an id the prediction log does not
hold (yet, or any more) is stored anyway and counted as ``unknown`` in the answer, never an
error that loses the batch. A malformed body is refused whole with a 4xx and a sentence.

Authenticated like the webhook: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with
MLGITOPS_WEBHOOK_SECRET>``, or ``Authorization: Bearer <MLGITOPS_API_TOKEN>``; with neither
configured, loopback callers only.

``GET /metrics``: the realized and estimated performance of each model's versions in the
Prometheus text format (``mlgitops_realized_performance{model,version,metric}``,
``mlgitops_estimated_performance``, ``mlgitops_labelled_rows``, ``mlgitops_labels`` and
``mlgitops_labels_unmatched``), computed at most every `METRICS_TTL` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlgitops import errors, settings
from mlgitops.adapters import http_server, prediction_log, prediction_log_labels
from mlgitops.controller import performance

MAX_LABELS = 100_000
MAX_ID = 128
METRICS_TTL = 10.0
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Malformed(ValueError):
    """The body is not a feedback batch (the sentence says why)."""


def parse(body: bytes) -> tuple[list[str], list[Any]]:
    """The ids and labels of a feedback body; Malformed with a sentence otherwise."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("the body is not JSON; send {\"ids\": [...], \"labels\": [...]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list) or not isinstance(
            doc.get("labels"), list):
        raise Malformed("the body must be an object with an 'ids' list and a 'labels' list "
                        "of the same length")
    ids, labels = doc["ids"], doc["labels"]
    if len(ids) != len(labels):
        raise Malformed(f"{len(ids)} ids but {len(labels)} labels: give one label per id")
    if not ids:
        raise Malformed("the batch is empty: give at least one id and its label")
    if len(ids) > MAX_LABELS:
        raise Malformed(f"{len(ids)} labels in one request; send at most {MAX_LABELS} per "
                        "request")
    for i, value in enumerate(ids):
        if not isinstance(value, str) or not value or len(value) > MAX_ID:
            raise Malformed(f"ids[{i}] is {http_server.quote(value)}: every id must be the "
                            f"non-empty string (at most {MAX_ID} characters) an inference "
                            "response carried")
    for i, value in enumerate(labels):
        if value is None or not isinstance(value, str | int | float | bool) or (
                isinstance(value, float) and value != value):
            raise Malformed(f"labels[{i}] is {http_server.quote(value)}: every label must be "
                            "a number, a string or a boolean")
    return ids, labels


def accept(labels: prediction_log_labels.Labels, source: performance.PredictionSource,
           name: str, ids: list[str], values: list[Any]) -> dict[str, Any]:
    """Store a batch and count it: new, updated (ids labelled before), repeated within the
    batch, unknown (no kept prediction has the id)."""
    distinct = list(dict.fromkeys(ids))
    before = labels.known(name, distinct)
    labels.add(name, ids, values)
    kept = source.read(name, ids=distinct)
    found = set(kept["id"].tolist()) if len(kept) else set()
    unknown = [i for i in distinct if i not in found]
    return {"model": name, "received": len(ids), "stored": len(distinct),
            "new": len(distinct) - len(before), "updated": len(before),
            "repeatedInBatch": len(ids) - len(distinct), "unknown": len(unknown),
            "unknownIds": unknown[:20]}


class Feedback:
    """The feedback route and the performance metrics of one gateway."""

    def __init__(self, labels: prediction_log_labels.Labels,
                 source: performance.PredictionSource, *, webhook_secret: str | None,
                 api_token: str | None, max_body_bytes: int = 16 * 1024 * 1024,
                 window_seconds: float | None = performance.WINDOW_SECONDS) -> None:
        self.labels = labels
        self.source = source
        self.webhook_secret = webhook_secret
        self.api_token = api_token
        self.max_body_bytes = max_body_bytes
        self.window_seconds = window_seconds
        self._cache: tuple[float, bytes] | None = None
        self._cache_lock = threading.Lock()

    def routes(self, models: Callable[[], Collection[str]]) -> list[Route]:
        """The routes, for the model names ``models`` gives (those the controller knows)."""

        async def feedback(request: Request) -> Response:
            name = request.path_params["name"]
            if name not in models():
                return _error(404, f"no model named {http_server.quote(name)} here; see "
                                   "`mlgitops status` for the models there are")
            try:
                body = await http_server.read_capped(request, self.max_body_bytes)
            except http_server.BadLength as exc:
                return _error(400, str(exc))
            except http_server.BodyTooLarge:
                return _error(413, f"the feedback body exceeds {self.max_body_bytes} bytes; "
                                   "split the labels over several requests")
            except ClientDisconnect:
                return _error(400, "the client went away before sending the whole body")
            denied = self._denied(request, body)
            if denied is not None:
                return denied
            try:
                ids, values = parse(body)
            except Malformed as exc:
                return _error(422 if "JSON" not in str(exc) else 400, str(exc))
            answer = await run_in_threadpool(accept, self.labels, self.source, name, ids,
                                             values)
            with self._cache_lock:
                self._cache = None
            return JSONResponse(answer)

        async def metrics(request: Request) -> Response:
            text = await run_in_threadpool(self.metrics_text, sorted(models()))
            return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

        return [Route("/v2/models/{name}/feedback", feedback, methods=["POST"]),
                Route("/metrics", metrics, methods=["GET"])]

    def _denied(self, request: Request, body: bytes) -> Response | None:
        if self.api_token and http_server.bearer_ok(request.headers.get("authorization"),
                                                    self.api_token):
            return None
        if self.webhook_secret:
            signature = request.headers.get("x-hub-signature-256", "")
            if not _SIGNATURE.fullmatch(signature):
                if self.api_token and request.headers.get("authorization"):
                    return _error(401, http_server.UNAUTHORIZED)
                return _error(401, "X-Hub-Signature-256 is missing or malformed: sign the body "
                                   "with MLGITOPS_WEBHOOK_SECRET (HMAC-SHA256), as a webhook")
            mac = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature, "sha256=" + mac):
                return _error(401, "X-Hub-Signature-256 does not match the body; check the "
                                   "secret")
            return None
        if self.api_token:
            return _error(401, http_server.UNAUTHORIZED)
        host = request.client.host if request.client else ""
        if host not in _LOOPBACK:
            return _error(403, "feedback from other machines needs MLGITOPS_WEBHOOK_SECRET or "
                               "MLGITOPS_API_TOKEN set on the controller")
        return None

    def measure(self, name: str) -> performance.Performance:
        return performance.measure(name, self.source, self.labels,
                                   window_seconds=self.window_seconds)

    def metrics_text(self, names: list[str]) -> bytes:
        """The Prometheus exposition of every model's performance (cached `METRICS_TTL` s)."""
        with self._cache_lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < METRICS_TTL:
                return self._cache[1]
        text = render([self.measure(n) for n in names]).encode()
        with self._cache_lock:
            self._cache = (time.monotonic(), text)
        return text


def render(figures: list[performance.Performance]) -> str:
    """Prometheus text: one sample per model, version and metric (all kept rows)."""
    lines = [
        "# HELP mlgitops_realized_performance A version's metric on its labelled rows "
        "(scikit-learn's).",
        "# TYPE mlgitops_realized_performance gauge",
        "# HELP mlgitops_estimated_performance A version's metric estimated from its class "
        "probabilities (CBPE; valid when calibrated).",
        "# TYPE mlgitops_estimated_performance gauge",
        "# HELP mlgitops_labelled_rows A version's kept predictions that have a label.",
        "# TYPE mlgitops_labelled_rows gauge",
        "# HELP mlgitops_labels Labels kept for a model (one per id).",
        "# TYPE mlgitops_labels gauge",
        "# HELP mlgitops_labels_unmatched Labels whose id matches no kept prediction.",
        "# TYPE mlgitops_labels_unmatched gauge",
    ]
    for perf in figures:
        model = _label(perf.name)
        lines.append(f'mlgitops_labels{{model="{model}"}} {perf.labels}')
        lines.append(f'mlgitops_labels_unmatched{{model="{model}"}} {perf.unmatched}')
        for fig in perf.overall:
            where = f'model="{model}",version="{_label(fig.version)}"'
            lines.append(f"mlgitops_labelled_rows{{{where}}} {fig.labelled}")
            for metric, value in sorted(fig.realized.items()):
                lines.append(f'mlgitops_realized_performance{{{where},metric="{metric}"}} '
                             f"{value!r}")
            for metric, value in sorted(fig.estimated.items()):
                lines.append(f'mlgitops_estimated_performance{{{where},metric="{metric}"}} '
                             f"{value!r}")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": http_server.clip(message)}, status_code=status)


LABELS = performance.LABELS


def local(state_dir: Path, stats_root: Path, *, webhook_secret: str | None,
          api_token: str | None) -> Feedback:
    """The embedded runtime's feedback: labels in ``<state>/labels``, predictions read from
    the servers' logs under the stats root."""
    age = settings.prediction_log().max_age_seconds
    return Feedback(prediction_log_labels.Labels(state_dir / LABELS, max_age_seconds=age),
                    prediction_log.Directory(stats_root), webhook_secret=webhook_secret,
                    api_token=api_token)


# ------------------------------------------------------------------------------- the client
CONTROLLER_FILE = "controller.json"  # what `controller.run` records about the running gateway


def send(name: str, ids: Iterable[Any], labels: Iterable[Any], *, repo: Path | str = ".",
         url: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Send labels for the predictions with ``ids`` to the gateway of model ``name``, in
    batches of at most `MAX_LABELS`; the counts of every batch summed.

    ``url``: the gateway (default: the one the running controller of ``repo`` recorded).
    Signed with ``MLGITOPS_WEBHOOK_SECRET`` and/or ``MLGITOPS_API_TOKEN`` when set.
    A missing label (None, NaN, ``pd.NA``: not come back yet) is left out and counted as
    ``skipped``; send it again once it is known.
    """
    import httpx

    ids_list = [str(i) for i in _values(ids)]
    label_list = [_scalar(v) for v in _values(labels)]
    if len(ids_list) != len(label_list):
        raise errors.ConfigError(f"{len(ids_list)} ids but {len(label_list)} labels: give one "
                                 "label per id")
    if not ids_list:
        raise errors.ConfigError("no labels to send: give at least one id and its label")
    known = [not _missing(v) for v in label_list]
    skipped = len(known) - sum(known)
    if skipped == len(known):
        raise errors.ConfigError(f"all {skipped} labels are missing (None or NaN): nothing to "
                                 "send; send them once they come back")
    if skipped:
        ids_list = [i for i, k in zip(ids_list, known, strict=True) if k]
        label_list = [v for v, k in zip(label_list, known, strict=True) if k]
    base = (url or _gateway_url(Path(repo))).rstrip("/")
    secret, token = settings.feedback_credentials()
    total: dict[str, Any] = {}
    with httpx.Client(timeout=timeout) as client:
        for at in range(0, len(ids_list), MAX_LABELS):
            body = orjson.dumps({"ids": ids_list[at:at + MAX_LABELS],
                                 "labels": label_list[at:at + MAX_LABELS]})
            headers = {"Content-Type": "application/json"}
            if secret:
                digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers["X-Hub-Signature-256"] = "sha256=" + digest
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                r = client.post(f"{base}/v2/models/{name}/feedback", content=body,
                                headers=headers)
            except httpx.HTTPError as exc:
                raise errors.Transient(f"cannot reach the gateway at {base} ({exc}); is "
                                       "`mlgitops up` running?") from exc
            if r.status_code != 200:
                try:
                    said = str(r.json().get("error", r.text))
                except ValueError:
                    said = r.text
                raise errors.ConfigError(f"the gateway refused the labels ({r.status_code}): "
                                         f"{http_server.clip(said)}")
            for key, value in r.json().items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
                elif isinstance(value, list):
                    total[key] = (total.get(key, []) + value)[:20]
                else:
                    total[key] = value
    if skipped:
        total["skipped"] = skipped
    return total


def _gateway_url(repo: Path) -> str:
    from mlgitops.adapters import files

    info = files.read_json(settings.state_dir(repo.resolve()) / CONTROLLER_FILE)
    if not isinstance(info, dict) or not info.get("url"):
        raise errors.ConfigError(f"no controller has run for {repo}: start `mlgitops up --repo "
                                 f"{repo}`, or pass the gateway's url")
    return str(info["url"])


def _values(values: Iterable[Any]) -> list[Any]:
    tolist = getattr(values, "tolist", None)
    return list(tolist()) if callable(tolist) else list(values)


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _missing(value: Any) -> bool:
    """A label that has not come back: None, NaN, ``pd.NA`` or ``pd.NaT``."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def local_performance(state_dir: Path, name: str) -> performance.Performance:
    """Model ``name``'s performance on this machine (what `mlgitops status` shows): the
    labels in ``<state>/labels`` joined with the logs under ``<state>/stats``."""
    return performance.measure(name, prediction_log.Directory(state_dir / performance.STATS),
                               prediction_log_labels.Labels(state_dir / LABELS))


def version_metrics(state_dir: Path, name: str, version: str) -> dict[str, float]:
    """Version ``version``'s performance on all its kept rows, as MLflow metric names
    (``performance.realized.<metric>``, ``performance.estimated.<metric>``,
    ``performance.labelled``); empty when no row of it is kept."""
    try:
        perf = local_performance(state_dir, name)
    except errors.MlgitopsError:
        return {}
    out: dict[str, float] = {}
    for fig in perf.overall:
        if fig.version != version:
            continue
        out["performance.labelled"] = float(fig.labelled)
        out.update({f"performance.realized.{k}": v for k, v in fig.realized.items()})
        out.update({f"performance.estimated.{k}": v for k, v in fig.estimated.items()})
    return out


def version_rows(state_dir: Path, name: str,
                 version: str) -> tuple[str, Any, list[Any]] | None:
    """Version ``version``'s labelled rows on this machine (`performance.labelled_frame`)."""
    return performance.labelled_frame(prediction_log.Directory(state_dir / performance.STATS),
                                      prediction_log_labels.Labels(state_dir / LABELS), name,
                                      version)
