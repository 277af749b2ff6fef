"""Where decisions go, wired once for the embedded controller and the operator.

The decision pages always; the outgoing webhook when a URL is set; the Evidently workspace and
the MLflow store unless switched off (each in its own niced child, `tracking`, started when
there is a decision to record and stopped when idle). Every sink has its own lane in the `decisions.Dispatcher`, so a slow one never delays the loop or another sink.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlgitops import settings
from mlgitops.adapters import webhooks
from mlgitops.controller import decision_pages, reports, tracking
from mlgitops.controller import decisions as decision_log


def dispatcher(state_dir: Path, *, clone: Callable[[], Path], notify: settings.NotifySettings,
               track: settings.TrackingSettings) -> decision_log.Dispatcher:
    """The decision log under ``<state>/reports`` and its sinks (not started)."""
    reports_root = state_dir / reports.REPORTS
    sinks: list[decision_log.Sink] = [decision_pages.Pages(reports_root, clone=clone)]
    if notify.url:
        sinks.append(webhooks.Notifier(webhooks.Target(
            url=notify.url, secret=notify.secret,
            format="slack" if notify.format == "slack" else "json",
            timeout_seconds=notify.timeout_seconds)))
    if track.evidently:
        sinks.append(tracking.EvidentlySink(state_dir, clone=clone(), keep=track.evidently_keep,
                                            idle=track.idle_seconds))
    if track.mlflow:
        sinks.append(tracking.MlflowSink(state_dir, clone=clone(), uri=track.mlflow_uri,
                                         idle=track.idle_seconds))
    log = decision_log.Log(reports_root, keep=track.decisions_keep,
                           keep_days=track.decisions_keep_days)
    return decision_log.Dispatcher(log=log, state_dir=state_dir, sinks=sinks)


def start(dispatcher: decision_log.Dispatcher) -> None:
    """Start the sinks' lanes, and give the pages sink every recorded decision whose page is
    missing. The tracking sinks' child processes start with the first decision to record."""
    dispatcher.start()
    for missing in decision_pages.missing(dispatcher.state_dir / reports.REPORTS):
        dispatcher.resend(missing)  # pages lost with the reports directory


def stop(dispatcher: decision_log.Dispatcher) -> None:
    """Stop taking decisions and stop the sinks' child processes."""
    dispatcher.stop()
    tracking.quiet_close(*dispatcher.sinks)
