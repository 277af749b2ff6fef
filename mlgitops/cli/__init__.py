"""The ``mlgitops`` command: wires settings and adapters into publish, controller and server.

Wiring only, one module per concern; each registers its commands on `group.main`:
`authoring` (init, publish, validate, crd), `trust` (trust allow/list), `control` (up, retry),
`observe` (status, history, report), `pod` (fetch-model, serve), `operator`, `demos` (demo).
May import any layer below it; nothing in mlgitops imports it.
"""

from __future__ import annotations

import sys

#: What a model pod runs (`pod`): started as ``mlgitops fetch-model|serve``, the command loads
#: only its own module, not every command group's imports (seconds of a pod's start).
POD_COMMANDS = ("fetch-model", "serve")

if sys.argv[0].endswith("mlgitops") and sys.argv[1:2] and sys.argv[1] in POD_COMMANDS:
    from mlgitops.cli import pod
else:
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
from mlgitops.cli.group import main  # noqa: E402

__all__ = ["main"]
