"""Telemetry of MLflow and Evidently is off in every mlgitops process and its children."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.process

PROBE = r"""
import json, os, subprocess, sys
from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
before = {"mlflow": MLFLOW_DISABLE_TELEMETRY.get(), "dnt": os.environ.get("DO_NOT_TRACK")}
import mlgitops  # what every mlgitops process imports first
from mlflow.telemetry import utils
from evidently import telemetry as evidently_telemetry
child = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                       capture_output=True, text=True, check=True)
child_env = json.loads(child.stdout)
print(json.dumps({
    "before": before,
    "mlflow_flag": MLFLOW_DISABLE_TELEMETRY.get(),
    "mlflow_disabled": utils.is_telemetry_disabled(),
    "evidently_enabled": os.environ.get(evidently_telemetry.DO_NOT_TRACK_ENV) is None,
    "child": {k: child_env.get(k) for k in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")},
}))
"""


def test_telemetry_is_off_whatever_the_environment_said() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_DISABLE_TELEMETRY", "EVIDENTLY_DISABLE_TELEMETRY")}
    env.update(DO_NOT_TRACK="1", MLFLOW_ENABLE_TELEMETRY="true")  # the common, ineffective spellings
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == {"mlflow": False, "dnt": "1"}  # MLflow would have sent telemetry
    assert got["mlflow_flag"] is True and got["mlflow_disabled"] is True
    assert got["evidently_enabled"] is False
    assert got["child"] == {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
