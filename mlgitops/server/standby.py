"""Standby mode: a warm server process waiting for the model it should serve.

Importing scikit-learn and friends takes seconds; loading and warming a model does not. The
controller keeps a ``python -m mlgitops.server --standby`` process warm and hands it a model
when a new version must serve. This module is the protocol (the `ServeSpec` line and the
events); `supervisor.standby` runs it in the process. Protocol, one JSON object per line:

1. The process imports everything, then prints ``{"event": "standby", "pid": <pid>}`` on
   stdout (flushed).
2. It reads ONE line on stdin: a `ServeSpec` as JSON (build it with `spec_line`)::

       {"model_dir": "/repo/models/credit", "name": "credit", "version": "<commit sha>",
        "digest": "sha256:...", "trusted_types": ["sklearn.tree._tree.Tree"],
        "host": "127.0.0.1", "port": 0, "workers": 1, "max_batch_size": 64,
        "max_delay_ms": 2, "stats_dir": "/state/stats/credit/<sha>", "record_stats": true}

   Optional keys: ``max_body_bytes`` (default 10 MB), ``predict_in_thread`` (default true),
   ``grpc_port`` (default null: no gRPC; 0 picks a free port) for the v2 gRPC API.
   ``port`` 0 picks a free port; ``workers`` 0 means one per core.
3. It loads the model, warms it up (one predict of a reference row), binds the socket and
   prints ``{"event": "ready", "port": <bound port>, "pid": <pid>}`` (plus ``"grpc_port"``
   when it serves gRPC) — or
   ``{"event": "error", "message": "<sentence>"}`` and exits with status 2 (also when stdin
   closes before a line, or the line is not a valid spec).
4. From then on it serves exactly like ``mlgitops serve``: SIGTERM or SIGINT to the process
   (or its process group) stops the workers and exits 0. Nothing more is written to stdout.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ServeSpec:
    """What a server process serves and how (the standby line and the ``serve`` options)."""

    model_dir: Path
    name: str
    version: str = "unversioned"
    digest: str = ""
    trusted_types: tuple[str, ...] = ()
    trust_allow: tuple[str, ...] | None = None
    """The controller's trust policy additions when it deployed this (None: the environment's)."""
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    stats_dir: Path | None = None
    record_stats: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    predict_in_thread: bool = True
    grpc_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def worker_count(self) -> int:
        """Workers to fork: ``workers``, or one per core when it is 0."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["model_dir"] = str(self.model_dir)
        data["stats_dir"] = None if self.stats_dir is None else str(self.stats_dir)
        data["trusted_types"] = list(self.trusted_types)
        data["trust_allow"] = None if self.trust_allow is None else list(self.trust_allow)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ServeSpec:
        """Parse a standby line's object; ValueError with a sentence when it is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the serve spec must be a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        for key in ("model_dir", "name"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"the serve spec needs {key!r} (a non-empty string)")
        trusted = data.get("trusted_types") or []
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            raise ValueError("'trusted_types' must be a list of type names")
        allow = data.get("trust_allow")
        if allow is not None and (not isinstance(allow, list)
                                  or not all(isinstance(t, str) for t in allow)):
            raise ValueError("'trust_allow' must be a list of type names")
        kwargs: dict[str, Any] = {
            "model_dir": Path(data["model_dir"]),
            "name": data["name"],
            "trusted_types": tuple(trusted),
            "trust_allow": None if allow is None else tuple(allow),
        }
        typed: dict[str, type] = {
            "version": str,
            "digest": str,
            "host": str,
            "port": int,
            "workers": int,
            "max_batch_size": int,
            "max_delay_ms": float,
            "record_stats": bool,
            "max_body_bytes": int,
            "predict_in_thread": bool,
            "grpc_port": int,
        }
        for key, kind in typed.items():
            value = data.get(key)
            if value is None:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if kind is int and value == "auto" and key == "workers":
                value = 0
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{key!r} must be of type {kind.__name__}, not {value!r}")
            kwargs[key] = value
        if data.get("stats_dir"):
            kwargs["stats_dir"] = Path(str(data["stats_dir"]))
        spec = cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})
        spec.check()
        return spec

    def check(self) -> None:
        """ValueError with a sentence for settings that cannot work."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"grpc_port must be between 0 and 65535, not {self.grpc_port}")
        if self.grpc_port is not None and self.grpc_port != 0 and self.grpc_port == self.port:
            raise ValueError("grpc_port must differ from port (HTTP and gRPC need a port each)")
        if self.workers < 0:
            raise ValueError("workers must be a positive number (or 0 / 'auto' for one per core)")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")


def spec_line(spec: ServeSpec) -> str:
    """The line to write to a standby process's stdin (with the newline)."""
    return json.dumps(spec.to_json()) + "\n"


def emit(event: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Print one protocol event as a JSON line and flush."""
    out = stream or sys.stdout
    out.write(json.dumps(event) + "\n")
    out.flush()

