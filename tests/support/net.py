"""Loopback helpers: free ports, and which version a controller's gateway serves."""

from __future__ import annotations

import socket

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version_at(base: str, name: str = "credit") -> str | None:
    """The version the gateway at ``base`` serves for model ``name``; None while it serves none
    (or does not answer)."""
    try:
        r = httpx.get(f"{base}/v2/models/{name}", timeout=2)
        return r.json().get("version") if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
