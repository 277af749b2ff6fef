"""Reading an embedded controller's model status in tests."""

from __future__ import annotations

from typing import Any


def stalled(ctl: Any, name: str = "credit") -> str:
    """The message of ``name``'s Stalled condition on the running controller ``ctl``
    (`controller.run.Controller`); "" while it is not stalled."""
    st = ctl.store.status(name).to_dict()
    c = next((c for c in st["conditions"] if c["type"] == "Stalled"), None)
    return str(c["message"]) if c and c["status"] == "True" else ""
