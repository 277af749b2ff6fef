"""``mlgitops serve``: the click command (the main CLI registers it with ``add_command``)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from mlgitops import errors
from mlgitops.core.serve_spec import ServeSpec

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
}


def parse_size(text: str) -> int:
    """``10MB`` -> 10_000_000, ``512KiB`` -> 524_288, ``1000`` -> 1000."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; write e.g. 10MB, 512KiB or 1000000")
    value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if value < 1:
        raise ValueError(f"{text!r} is too small; the body limit must be at least 1 byte")
    return int(value)


def parse_workers(text: str) -> int:
    """A positive count, or ``auto`` (0: one per core)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a number of workers; give a positive number or 'auto'"
        ) from None
    if n < 1:
        raise ValueError("--workers must be at least 1 (or 'auto' for one per core)")
    return n


def manifest_trusted_types(model_dir: Path) -> tuple[str, ...] | None:
    """``spec.model.trustedTypes`` of ``<repo>/manifests/<name>.yaml`` for ``<repo>/models/<name>``."""
    model_dir = model_dir.resolve()
    if model_dir.parent.name != "models":
        return None
    manifest = model_dir.parent.parent / "manifests" / f"{model_dir.name}.yaml"
    if not manifest.is_file():
        return None
    import yaml

    try:
        doc = yaml.safe_load(manifest.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigError(
            f"{manifest}: cannot be read ({exc}); fix it or pass --trust"
        ) from exc
    types: Any = (
        ((((doc or {}).get("spec") or {}).get("model") or {}).get("trustedTypes"))
        if isinstance(doc, dict)
        else None
    )
    if types is None:
        return ()
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise errors.ConfigError(
            f"{manifest}: spec.model.trustedTypes must be a list of type names"
        )
    return tuple(types)


def resolve_trusted(model_dir: Path, trust: tuple[str, ...]) -> tuple[str, ...]:
    """``--trust`` values; else the manifest's; else () when the model needs no trusted type."""
    if trust:
        return trust
    found = manifest_trusted_types(model_dir)
    if found is not None:
        return found
    from mlgitops.adapters import mlflow_models

    try:
        needed = mlflow_models.required_types(mlflow_models.read_info(model_dir).model_file)
    except errors.ModelError as exc:
        raise errors.ConfigError(str(exc)) from exc
    if needed:
        raise errors.ConfigError(
            f"{model_dir}: the model needs types skops does not trust by default "
            f"({', '.join(needed)}) and there is no --trust and no manifests/<name>.yaml beside "
            "models/<name> to read spec.model.trustedTypes from; review them and pass each "
            "with --trust TYPE"
        )
    return ()


@click.command("serve")
@click.argument("model_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--port", type=int, required=True, help="TCP port (0 picks a free one).")
@click.option(
    "--grpc-port",
    type=int,
    default=None,
    help="Also serve the v2 gRPC API (inference.GRPCInferenceService) on this port (0: a free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--name", default=None, help="Model name (default: the directory name).")
@click.option(
    "--version",
    "version",
    default="unversioned",
    show_default=True,
    help="Version (commit) to report.",
)
@click.option("--digest", default="", help="Content digest to report.")
@click.option(
    "--trust",
    multiple=True,
    help="A reviewed skops type to trust (repeat); default: the manifest's.",
)
@click.option(
    "--workers", default="1", show_default=True, help="Worker processes, or 'auto' (one per core)."
)
@click.option(
    "--max-batch-size", type=int, default=64, show_default=True, help="Most rows per predict call."
)
@click.option(
    "--max-delay-ms",
    type=float,
    default=2.0,
    show_default=True,
    help="Most added delay to batch requests.",
)
@click.option(
    "--stats-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where workers publish live statistics.",
)
@click.option("--no-stats", is_flag=True, help="Do not record live statistics.")
@click.option(
    "--max-body-bytes",
    default="10MiB",
    show_default=True,
    help="Largest request body, e.g. 10MB or 512KiB (413 beyond it).",
)
@click.option(
    "--predict-inline", is_flag=True, help="Predict on the event loop instead of a thread."
)
def serve(
    model_dir: Path,
    port: int,
    grpc_port: int | None,
    host: str,
    name: str | None,
    version: str,
    digest: str,
    trust: tuple[str, ...],
    workers: str,
    max_batch_size: int,
    max_delay_ms: float,
    stats_dir: Path | None,
    no_stats: bool,
    max_body_bytes: str,
    predict_inline: bool,
) -> None:
    """Serve the MLflow model in MODEL_DIR over HTTP (KServe v2 with binary tensors, MLflow
    /invocations, /metrics) and, with --grpc-port, the v2 gRPC API."""
    try:
        spec = ServeSpec(
            model_dir=model_dir,
            name=name or model_dir.resolve().name,
            version=version,
            digest=digest,
            trusted_types=resolve_trusted(model_dir, trust),
            host=host,
            port=port,
            grpc_port=grpc_port,
            workers=parse_workers(workers),
            max_batch_size=max_batch_size,
            max_delay_ms=max_delay_ms,
            stats_dir=stats_dir,
            record_stats=not no_stats,
            max_body_bytes=parse_size(max_body_bytes),
            predict_in_thread=not predict_inline,
        )
        spec.check()
    except (ValueError, errors.ConfigError) as exc:
        raise click.UsageError(str(exc)) from exc
    from mlgitops.server import supervisor

    code = supervisor.run(spec)
    # Skip interpreter teardown (seconds with scikit-learn loaded): the workers are gone.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
