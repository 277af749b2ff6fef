"""What the HTTP routes and the gRPC service of one worker share: the model they serve (name
and version checks, metadata, readiness) and the one path from validated rows to predictions,
the micro-batcher (and through it the live statistics and the batch metrics), and the
prediction log (every scored request under its id: `predictions`).

A version is the commit that serves. A request may name it in full or by a unique prefix of
at least `PREFIX` hex characters; any other version is a `problems.NotFound` whose sentence
names the version that serves.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from mlgitops.core.serve_spec import ServeSpec
from mlgitops.server import batching, predictions, problems, schema, v2_protocol

#: The shortest version prefix accepted (as ``git`` abbreviates commits).
PREFIX = 7
#: What ``GET /v2`` and the gRPC ServerMetadata list as supported extensions.
EXTENSIONS = ("binary_tensor_data", "model_versions", "mlflow_invocations")
PLATFORM = "mlflow-sklearn"
#: The HTTP header (and gRPC metadata key) that carries a response's id.
REQUEST_ID_HEADER = "X-Request-Id"
_MAX_ID = 128
_HEX = re.compile(r"[0-9a-fA-F]+")


def request_id(given: str | None) -> str:
    """The id of a response: the one the request gave (v2 ``id``, ``X-Request-Id``), else a
    new one; a given id longer than 128 characters is a `problems.BadRequest`."""
    if given is None or given == "":
        return uuid.uuid4().hex
    if len(given) > _MAX_ID:
        raise problems.BadRequest(
            f"The request id has {len(given)} characters; at most {_MAX_ID} are accepted: "
            "send a shorter one, or none and use the one the response carries."
        )
    return given


def version_matches(asked: str, serving: str) -> bool:
    """``asked`` is ``serving``, or a prefix of it of at least `PREFIX` hex characters."""
    if asked == serving:
        return True
    return (
        len(asked) >= PREFIX
        and _HEX.fullmatch(asked) is not None
        and _HEX.fullmatch(serving) is not None
        and serving.lower().startswith(asked.lower())
    )


@dataclass
class Served:
    """The model one worker serves, as every protocol sees it."""

    spec: ServeSpec
    sig: schema.Signature
    batcher: batching.MicroBatcher
    output_datatype: str
    server_version: str
    ready: bool = False
    log: predictions.PredictionLog | None = None

    def check(self, name: str | None, version: str | None = None) -> None:
        """NotFound unless ``name`` is served here (and ``version``, when given, serves)."""
        spec = self.spec
        if name != spec.name:
            raise problems.NotFound(
                f"No model named {problems.shown(name)}; this server serves {spec.name!r}."
            )
        if version is None or version == "" or version_matches(version, spec.version):
            return
        hint = ""
        if (
            len(version) < PREFIX
            and _HEX.fullmatch(version)
            and spec.version.lower().startswith(version.lower())
        ):
            hint = f" (a version prefix needs at least {PREFIX} characters)"
        raise problems.NotFound(
            f"Version {problems.shown(version)} of model {spec.name!r} does not serve here"
            f"{hint}; version {spec.version} does: ask for it (or a prefix of at least "
            f"{PREFIX} characters), or for no version."
        )

    def check_ready(self) -> None:
        if not self.ready:
            raise problems.NotReady(
                f"Model {self.spec.name!r} is not ready (the server is stopping)."
            )

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Around reading and validating a request: the batcher waits for requests being
        decoded before it closes a batch."""
        self.batcher.begin()
        try:
            yield
        finally:
            self.batcher.end()

    async def predict(self, batch: schema.Batch, request_id: str) -> npt.NDArray[Any]:
        """The predictions for ``batch``, through the micro-batcher, queued to the prediction
        log under ``request_id``."""
        out: npt.NDArray[Any] = await self.batcher.submit(batch)
        if self.log is not None:
            self.log.record(request_id, batch, out)
        return out

    def model_metadata(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "versions": [spec.version],
            "platform": PLATFORM,
            "inputs": [
                {"name": c.name, "datatype": v2_protocol.V2_FOR_TYPE[c.type], "shape": [-1]}
                for c in self.sig.columns
            ],
            "outputs": [{"name": "predict", "datatype": self.output_datatype, "shape": [-1]}],
            "version": spec.version,
            "digest": spec.digest,
        }

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "mlgitops", "version": self.server_version, "extensions": list(EXTENSIONS)}
