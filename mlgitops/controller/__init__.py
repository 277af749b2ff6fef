"""The controller: makes what serves equal what Git says, and watches it drift.

Orchestration only: it reads Git through ``adapters.git``, runs servers through a runtime
adapter, and decides with ``core`` (plan, status, policy). It may NOT import mlflow or
evidently directly, nor parse HTTP requests itself beyond the gateway module.
"""
