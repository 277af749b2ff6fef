"""The gateway's table, shared by both runtimes: model name -> the handle answering for it.

The reconciler writes it (a deploy swaps a route atomically), the gateways (HTTP and gRPC) and
the drift monitor read it. Locally a handle is a server process; on Kubernetes it is the
model's Service.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic

from mlgitops.controller.ports import H


class Router(Generic[H]):
    """Model name -> handle. Swaps are atomic (the whole table is replaced)."""

    def __init__(self) -> None:
        self.routes: dict[str, H] = {}
        self.inflight: dict[Hashable, int] = {}

    def get(self, name: str) -> H | None:
        return self.routes.get(name)

    def set(self, name: str, handle: H) -> H | None:
        old = self.routes.get(name)
        self.routes = {**self.routes, name: handle}
        return old

    def drop(self, name: str) -> H | None:
        old = self.routes.get(name)
        self.routes = {k: v for k, v in self.routes.items() if k != name}
        return old

    def busy(self, handle: H) -> int:
        return self.inflight.get(handle.key, 0)
