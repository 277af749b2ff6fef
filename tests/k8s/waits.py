"""Polling for the cluster tests: one `wait_for` that fails with what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from mlgitops.devcluster.kubelet import Kubelet

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0, *,
             kubelet: Kubelet | None = None, every: float = 0.05) -> T:  # fmt: skip
    """Poll ``probe`` until it returns something truthy; on time-out fail naming ``what``, its
    last value, and (given the kubelet stand-in) the tail of every pod's container logs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    logs = ""
    if kubelet is not None:
        for rec in kubelet.records.values():
            for c in ("fetch-model", "server"):
                logs += f"\n--- {rec.name}/{c}:\n{kubelet.logs(rec.name, c)[-3000:]}"
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){logs}")
