"""Errors of mlgitops, classified by what the loop does next.

```
MlgitopsError                  base; every message is a sentence that says what to do
├── Stalled                    needs a person; the loop stops retrying this input
│   ├── ManifestError          a manifest is malformed (names the file and the field)
│   ├── ModelError             a model directory is invalid, its digest differs, or it does not load
│   ├── BaselineError          baseline.json is missing or inconsistent with the model
│   ├── QuarantinedError       the digest was auto-reverted and is quarantined
│   ├── ConfigError            settings or command-line input are wrong (also: RBAC refusals)
│   └── NotFound               a Kubernetes object to write to is gone (or its namespace)
├── Waiting                    retry after `delay` seconds (e.g. not enough rows yet)
└── Transient                  retry with back-off (I/O, a process that died, a push race)
    ├── GitError               a git command failed
    ├── PushRejected           the remote moved on; fetch, re-apply, retry
    ├── RuntimeFailure         a server process failed to start or answer
    ├── ReportError            building an Evidently report failed (never blocks a revert)
    ├── TrackingError          MLflow could not record a decision (never blocks a deploy or revert)
    ├── NotifyError            an outgoing webhook failed (retried off the loop; never blocks)
    └── ClusterError           the Kubernetes API server is unreachable, throttles or fails
        └── Conflict           a Kubernetes object changed meanwhile (409): read, re-apply
```
Third-party exceptions are translated at the adapter boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class MlgitopsError(Exception):
    """Base of every error mlgitops raises on purpose."""


class Stalled(MlgitopsError):
    """Needs a person: retrying the same input cannot succeed."""


class ManifestError(Stalled):
    """A manifest is malformed; the message names the file and the field."""


class ModelError(Stalled):
    """A model directory is invalid, its digest differs, or it does not load."""


class BaselineError(Stalled):
    """baseline.json is missing or inconsistent with the model."""


class QuarantinedError(Stalled):
    """The model digest was reverted automatically and is quarantined."""


class ConfigError(Stalled):
    """Settings or command-line input are wrong."""


class NotFound(Stalled):
    """A Kubernetes object (or its namespace) that a write needs does not exist."""


class Waiting(MlgitopsError):
    """Not an error yet: retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Transient(MlgitopsError):
    """Retry with back-off."""


class GitError(Transient):
    """A git command failed."""


class PushRejected(GitError):
    """The remote moved on meanwhile: fetch, re-apply, retry (never force-push)."""


class RuntimeFailure(Transient):
    """A server process failed to start, died, or did not answer."""


class ReportError(Transient):
    """Building an Evidently report failed; this never blocks a revert."""


class TrackingError(Transient):
    """MLflow could not record a decision or move an alias; retried, never blocking."""


class NotifyError(Transient):
    """An outgoing webhook could not be delivered (retried with back-off, off the loop)."""


class ClusterError(Transient):
    """The Kubernetes API server could not be reached, throttled (429) or failed (5xx)."""


class Conflict(ClusterError):
    """A Kubernetes object changed since it was read (409): read it again, re-apply, retry."""
