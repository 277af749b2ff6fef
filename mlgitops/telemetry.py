"""Telemetry of MLflow and Evidently: off in every mlgitops process and every child it starts.

mlflow reads ``MLFLOW_DISABLE_TELEMETRY`` and only the spelling ``DO_NOT_TRACK=true``;
Evidently reads ``DO_NOT_TRACK`` and its own switch. The values are set whatever the
environment had (``DO_NOT_TRACK=1`` would leave MLflow's telemetry on).
"""

from __future__ import annotations

import os

OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
}


def off() -> None:
    os.environ.update(OFF)
