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
import sys
from typing import IO, Any

from mlgitops.core.serve_spec import DEFAULT_MAX_BODY_BYTES, ServeSpec

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ServeSpec", "emit", "spec_line"]


def spec_line(spec: ServeSpec) -> str:
    """The line to write to a standby process's stdin (with the newline)."""
    return json.dumps(spec.to_json()) + "\n"


def emit(event: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Print one protocol event as a JSON line and flush."""
    out = stream or sys.stdout
    out.write(json.dumps(event) + "\n")
    out.flush()

