"""Reading ``MLGITOPS_*`` variables: numbers, choices, sizes, ports, quantities, each checked
with a sentence saying what is wrong and what to do."""

from __future__ import annotations

import os
import re

from mlgitops import errors, telemetry


def telemetry_off() -> None:
    """mlflow and evidently call home unless told not to; mlgitops never lets them.

    ``import mlgitops`` already did this; called again where a process starts, in case
    something changed the environment since.
    """
    telemetry.off()


def positive(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise errors.ConfigError(f"{name}={raw!r} is not a number; unset it or give seconds") from exc
    if value <= 0:
        raise errors.ConfigError(f"{name}={raw!r} must be positive")
    return value


def fraction(name: str, default: float) -> float:
    """A share in (0, 1]."""
    value = positive(name, default)
    if value > 1:
        raise errors.ConfigError(f"{name}={os.environ[name]!r} is a share: give a number in "
                                 "(0, 1], e.g. 0.05, or unset it")
    return value


def choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise errors.ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}; unset it "
                                 "or pick one")
    return raw


def byte_count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise errors.ConfigError(f"{name}={raw!r} is not a number of bytes; unset it or give e.g. 1048576")
    return int(raw)


def grpc_port() -> int | None:
    raw = os.environ.get("MLGITOPS_GRPC_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise errors.ConfigError(
            f"MLGITOPS_GRPC_PORT={raw!r} is not a port; unset it or give e.g. 8701"
        )
    return int(raw)


def quantity(name: str, default: str) -> str:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``) from ``name``."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?", raw):
        raise errors.ConfigError(f"{name}={raw!r} is not a Kubernetes quantity; give e.g. 500m, "
                                 "2 or 1Gi")
    return raw


def port_or_none(name: str) -> int | None:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise errors.ConfigError(f"{name}={raw!r} is not a TCP port: use a number from 1 to 65535")
    return int(raw)
