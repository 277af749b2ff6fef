"""The controller: makes what serves equal what Git says, and watches it drift.

Orchestration only: it reads Git through ``adapters.git``, decides with ``core`` (plan,
status, policy), and runs workloads through its ports (`ports`: ``Workloads``,
``LiveStatsSource``, ``StatusSink``), which the embedded runtime implements in
``adapters.local_runtime`` and `fakes` implements in memory; `run` wires the runtime in.
Every decision (deploy, hold, drift window, revert) is a `core.decisions.Decision` appended to
the decision log and fanned out to sinks off the loop (`decisions`: pages, webhooks, Evidently,
MLflow). Layers, checked by import-linter: run > monitor, gateway > reconciler, reports, revert,
report_files, fakes, decision_pages > source, state, ports, decisions. It may NOT import mlflow or evidently directly,
nor parse HTTP requests itself beyond the gateway module; the reconciler and the monitor may
NOT import a runtime adapter.
"""
