"""The controller: makes what serves equal what Git says, and watches it drift.

Orchestration only: it reads Git through ``adapters.git``, decides with ``core`` (plan,
status, policy), and runs workloads through its ports (`ports`: ``Workloads``,
``LiveStatsSource``, ``StatusSink``), which the embedded runtime implements in
``adapters.local_runtime`` and `fakes` implements in memory; `run` wires the runtime in.
Layers, checked by import-linter: run > monitor, gateway > reconciler, reports, revert,
report_files, fakes > source, state, ports. It may NOT import mlflow or evidently directly,
nor parse HTTP requests itself beyond the gateway module; the reconciler and the monitor may
NOT import a runtime adapter.
"""
