"""Logging for the long-running commands (``mlgitops operator``; usable by ``mlgitops up``).

`setup` sends every log record (and Python warnings) to stderr, one line each, as ``text``
(``2026-12-07T12:15:00.123Z INFO mlgitops.operator model=credit commit=0a1b2c3d4e5f message``)
or ``json`` (one object per line: ``time``, ``level``, ``logger``, ``message`` and, where
known, ``model``, ``commit``, ``namespace``, ``event``: what log collectors in a cluster index).
A record says which model and commit it concerns with ``extra=logs.fields(model=…, commit=…)``;
kopf's per-object records (a ModelDeployment's handlers) carry the object's namespace and name.

May NOT read the environment or import the controller, the operator or the CLI.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

from mlgitops.core import clock

FORMATS = ("text", "json")
#: The structured fields a record may carry (``extra=fields(...)``), in output order.
FIELDS = ("model", "commit", "namespace", "event")
#: Chatty libraries: their INFO is not the operator's story (kopf's per-object records are).
QUIET = {"kopf": logging.WARNING, "kopf.objects": logging.INFO, "kopf.activities": logging.INFO,
         "urllib3": logging.WARNING,
         "httpx": logging.WARNING, "git": logging.WARNING}
_HANDLER_MARK = "_mlgitops_logs"


def fields(**values: str | None) -> dict[str, str]:
    """``extra=`` for a log call: the known ones of model, commit, namespace, event."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"log fields are {', '.join(FIELDS)}, not {', '.join(sorted(unknown))}")
    return {k: str(v) for k, v in values.items() if v}


def structured(record: logging.LogRecord) -> dict[str, str]:
    """The fields of ``record``: its ``extra`` ones, else kopf's object reference (k8s_ref)."""
    out: dict[str, str] = {}
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        if ref.get("name"):
            out["model"] = str(ref["name"])
        if ref.get("namespace"):
            out["namespace"] = str(ref["namespace"])
    for key in FIELDS:
        value = getattr(record, key, None)
        if value:
            out[key] = str(value)
    return out


class Formatter(logging.Formatter):
    """One line per record, ``text`` or ``json`` (see the module docstring)."""

    def __init__(self, fmt: str = "text") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"the log format is one of {', '.join(FORMATS)}, not {fmt!r}")
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        when = clock.iso(record.created, ms=True)
        extra = structured(record)
        if self.fmt == "json":
            return json.dumps({"time": when, "level": record.levelname, "logger": record.name,
                               **extra, "message": message}, ensure_ascii=False)
        tags = " ".join(f"{k}={v[:12] if k == 'commit' else v}" for k, v in extra.items())
        return " ".join(p for p in (when, record.levelname, record.name, tags, message) if p)


def setup(fmt: str = "text", *, level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) as ``fmt`` from ``level`` up; Python warnings too. Called
    again, it replaces the handler it installed before (never anyone else's)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"the log level is one of DEBUG, INFO, WARNING, ERROR, not {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter(fmt))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
    logging.captureWarnings(True)
    return handler


def record_fields(record: dict[str, Any]) -> dict[str, str]:
    """`fields` of a controller event record (``state.Store.event``): model, commit, event."""
    return fields(model=record.get("model"), commit=record.get("commit"), event=record.get("type"))
