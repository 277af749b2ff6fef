"""Inference server: one model version over HTTP, with micro-batching and live statistics.

What it is: an ASGI app (Starlette on uvicorn with uvloop/httptools, orjson for JSON) that
speaks the KServe Open Inference Protocol v2 and the MLflow scoring protocol, validates
(JSON and Triton's binary tensor data extension; versioned routes where a version is the
serving commit) and, with ``--grpc-port``, the v2 gRPC API on the same code path, validates
every request against the model's MLflow signature, coalesces concurrent requests into one
``predict`` call, exposes Prometheus metrics and records live feature statistics for the
drift monitor (through ``mlgitops.adapters.stats_store``). A supervisor loads the model once
and forks the worker processes that share the listening socket. ``--standby`` keeps a warm
process (imports done) waiting for a model on stdin, so a new version serves in < 1 s.

Beside it, the two other processes of the serving side: `host` (``python -m
mlgitops.server.host``, several models in one process for the embedded runtime) and `fetch`
(``mlgitops fetch-model``, a model pod's init container: the one commit's model, checked, on
disk before the server starts).

What it may NOT do: import mlflow (models load through ``adapters.mlflow_models``, which
reads the MLmodel file and skops without mlflow), import the controller or the CLI, talk to
Git (only `fetch` does, in its own container; import-linter checks that the serving process
never imports it), write anywhere but its stats directory, answer a client's mistake with a
5xx, or call any address but the one it listens on.
"""
