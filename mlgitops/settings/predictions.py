"""The prediction log each server keeps to join labels later (`server.predictions`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlgitops import errors
from mlgitops.settings import environment

#: Rows each worker of a version keeps by default, and for how long (30 days).
DEFAULT_ROWS = 100_000
DEFAULT_AGE_SECONDS = 30 * 24 * 3600.0


@dataclass(frozen=True)
class PredictionLogSettings:
    enabled: bool = True
    """``MLGITOPS_PREDICTION_LOG`` (``on`` | ``off``)."""
    max_rows: int = DEFAULT_ROWS
    """``MLGITOPS_PREDICTION_LOG_ROWS``: rows kept per version (split
    evenly over its workers; the oldest go first)."""
    max_age_seconds: float = DEFAULT_AGE_SECONDS
    """``MLGITOPS_PREDICTION_LOG_MAX_AGE``: seconds a row is kept."""
    interval_seconds: float = 30.0
    """``MLGITOPS_PREDICTION_LOG_INTERVAL``: the longest a scored row waits in memory before
    it is written (sooner once 8192 rows wait); a label sent earlier counts as unknown."""


def prediction_log() -> PredictionLogSettings:
    """The prediction log's settings from the environment (ConfigError when one is wrong)."""
    return PredictionLogSettings(
        enabled=environment.choice("MLGITOPS_PREDICTION_LOG", ("on", "off"), "on") == "on",
        max_rows=_rows("MLGITOPS_PREDICTION_LOG_ROWS", DEFAULT_ROWS),
        max_age_seconds=environment.positive("MLGITOPS_PREDICTION_LOG_MAX_AGE",
                                             DEFAULT_AGE_SECONDS),
        interval_seconds=environment.positive("MLGITOPS_PREDICTION_LOG_INTERVAL", 30.0),
    )


def _rows(name: str, default: int) -> int:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise errors.ConfigError(f"{name}={raw!r} is not a number of rows; unset it or give e.g. "
                                 "100000")
    return int(raw)


def feedback_credentials() -> tuple[str | None, str | None]:
    """What a feedback client signs with: ``MLGITOPS_WEBHOOK_SECRET`` (HMAC of the body) and
    ``MLGITOPS_API_TOKEN`` (bearer), each None when unset."""
    from mlgitops.settings import endpoints

    return os.environ.get("MLGITOPS_WEBHOOK_SECRET") or None, endpoints.access().api_token
