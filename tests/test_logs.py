"""Logging for the operator (and ``mlgitops up``): one line per record, text or JSON, with the
model and commit where known; the controller's events carry both; warnings are logged too."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgitops import logs
from mlgitops.controller import state

pytestmark = pytest.mark.fast

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET}
    handler = logs.setup("json", stream=out)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, was in quiet.items():
            logging.getLogger(name).setLevel(was)
        logging.captureWarnings(False)
        assert root.handlers == handlers


def records(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_and_the_known_fields(stream: io.StringIO) -> None:
    log = logging.getLogger("mlgitops.test")
    log.info("deployed", extra=logs.fields(model="credit", commit=COMMIT))
    log.warning("no model here")
    log.debug("below the level")
    first, second = records(stream)
    assert first["level"] == "INFO" and first["logger"] == "mlgitops.test"
    assert (first["model"], first["commit"], first["message"]) == ("credit", COMMIT, "deployed")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "WARNING" and "model" not in second and "commit" not in second


def test_the_controller_events_are_logged_with_model_and_commit(
        stream: io.StringIO, tmp_path: Path) -> None:
    store = state.Store(tmp_path / "state")
    store.event("Deployed", model="credit", commit=COMMIT, message="credit serves 0123456789ab")
    (doc,) = [r for r in records(stream) if r["logger"] == "mlgitops.events"]
    assert (doc["model"], doc["commit"], doc["event"]) == ("credit", COMMIT, "Deployed")


def test_kopf_object_records_name_the_model_and_namespace(stream: io.StringIO) -> None:
    logging.getLogger("kopf.objects").info(
        "Handler 'reconcile' succeeded.", extra={"k8s_ref": {"name": "credit", "namespace": "models"}})
    logging.getLogger("kopf._core.reactor.queueing").info("kopf's own chatter stays out")
    (doc,) = records(stream)
    assert (doc["model"], doc["namespace"]) == ("credit", "models")


def test_warnings_are_logged_with_a_time(stream: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
    (doc,) = records(stream)
    assert doc["logger"] == "py.warnings" and "something is deprecated" in doc["message"]
    assert doc["level"] == "WARNING" and doc["time"]


def test_text_lines_and_bad_settings() -> None:
    formatter = logs.Formatter("text")
    record = logging.LogRecord("mlgitops.x", logging.INFO, __file__, 1, "held: %s", ("bad",), None)
    record.model, record.commit = "credit", COMMIT
    line = formatter.format(record)
    assert line.endswith(f"INFO mlgitops.x model=credit commit={COMMIT[:12]} held: bad")
    with pytest.raises(ValueError, match="one of text, json"):
        logs.Formatter("yaml")
    with pytest.raises(ValueError, match="log level"):
        logs.setup("text", level="LOUD")
    with pytest.raises(ValueError, match="not colour"):
        logs.fields(colour="red")
