"""`ServeSpec`: what a server process serves and how, shared by both sides of the wire.

The runtime that starts a server (`adapters.local_runtime`) builds one; the server
(`server.standby`, `server.host`, ``mlgitops serve``) parses and runs it. Its JSON form is
the standby line and the host's ``/load`` body (see `server.standby` for the protocol).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
