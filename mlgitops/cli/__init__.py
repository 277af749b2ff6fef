"""The ``mlgitops`` command: wires settings and adapters into publish, controller and server.

Wiring only, one module per concern; each registers its commands on `group.main`:
`authoring` (init, publish, validate, crd), `trust` (trust allow/list), `control` (up, retry),
`observe` (status, history, report), `pod` (fetch-model, serve), `operator`, `demos` (demo).
May import any layer below it; nothing in mlgitops imports it.
"""

from __future__ import annotations

from mlgitops.cli import (  # noqa: F401  (each registers its commands on main)
    authoring,
    control,
    demos,
    feedback,
    observe,
    operator,
    pod,
    trust,
)
from mlgitops.cli.group import main

__all__ = ["main"]
