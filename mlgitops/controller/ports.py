"""The controller's ports: what the reconciler and the monitor need of a runtime, as protocols.

Two runtimes implement them: the embedded one (`adapters.local_runtime`: server processes,
ports, a warm standby pool, the stats store files) and the Kubernetes one (Deployments and
Services, a stats route on each ready pod, the custom resource's status). The reconciler and
the monitor are written against these protocols only; `controller.run` wires the local runtime
in, and `controller.fakes` ships in-memory implementations for tests that need no process.

Errors a port raises are classified by what the loop does next (see `errors`): `errors.Stalled`
(the version cannot serve: hold it, keep the older one), `errors.Transient` (retry with
back-off), `errors.Waiting` (retry after its delay).

May NOT: import a runtime adapter (`adapters.local_runtime`, `adapters.kubernetes`).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mlgitops.adapters import stats_store
from mlgitops.core import plan, stats
from mlgitops.core.status import ModelStatus

if TYPE_CHECKING:
    import pandas as pd


class Handle(Protocol):
    """One version of one model that serves (or served): what a runtime hands back."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str:
        """The commit that serves (the model's version)."""
        ...

    @property
    def digest(self) -> str: ...

    @property
    def url(self) -> str:
        """Where the gateway forwards requests (``http://host:port``, no trailing slash)."""
        ...

    @property
    def key(self) -> Hashable:
        """Identifies this handle among all that ever served (in-flight request accounting)."""
        ...

    @property
    def where(self) -> str:
        """Where it answers, for messages (local: ``port 41234``)."""
        ...

    @property
    def label(self) -> str:
        """Which workload it is, for messages (local: ``pid 1234 on port 41234``)."""
        ...

    def record(self) -> dict[str, Any]:
        """What to persist so that `Workloads.recover` finds it again after a restart."""
        ...


H = TypeVar("H", bound=Handle)
H_co = TypeVar("H_co", bound=Handle, covariant=True)


class Leftover(Protocol):
    """A workload an earlier controller left behind, which `Workloads.recover` stopped."""

    @property
    def name(self) -> str:
        """Its model ("" when unknown)."""
        ...

    @property
    def version(self) -> str | None: ...

    @property
    def role(self) -> str:
        """What it was doing (local: standby, launching, serving, draining, unrecorded)."""
        ...

    @property
    def what(self) -> str:
        """What it is, for messages (local: ``server process (pid 1234)``)."""
        ...

    @property
    def details(self) -> Mapping[str, Any]:
        """What identifies it in its runtime, as event fields (local: ``pid``)."""
        ...


class Recovered(Protocol[H_co]):
    """What `Workloads.recover` found of an earlier controller's workloads."""

    @property
    def adopted(self) -> Mapping[str, H_co]:
        """Recorded workloads that still serve what their record says, by model."""
        ...

    @property
    def lost(self) -> Mapping[str, str]:
        """Recorded models whose workload is gone or does not answer, with why."""
        ...

    @property
    def leftovers(self) -> Sequence[Leftover]:
        """Other workloads the earlier controller left (warm spares, half-started or
        draining ones), which were stopped."""
        ...


class Workloads(Protocol[H]):
    """What serves now, and the means to change it: deploy, drain, stop, recover."""

    def deploy(self, desired: plan.Desired, *, model_dir: Path) -> H:
        """Serve ``desired`` and return once it answers.

        ``model_dir`` holds the model's files at that commit, exported and checked by the
        source (a runtime that fetches them itself may ignore it). `errors.Stalled` when the
        version cannot serve (it does not load), `errors.Transient` when trying again may help.
        """
        ...

    def relaunch(self, handle: H) -> H | None:
        """Start ``handle``'s version again (its workload died); None when that is not known how."""
        ...

    def alive(self, handle: H) -> bool:
        """True while ``handle``'s workload runs."""
        ...

    def draining(self, handle: H) -> None:
        """``handle`` was replaced: it finishes the requests it has, then `stop` ends it."""
        ...

    def stop(self, handle: H, *, grace: float = 5.0) -> None:
        """End ``handle``'s workload (forcefully after ``grace`` seconds)."""
        ...

    def recover(self, records: Mapping[str, Mapping[str, Any]]) -> Recovered[H]:
        """After a restart: adopt what ``records`` (model -> `Handle.record`) name and still
        serves; stop every other workload the earlier controller left."""
        ...

    def prepare(self) -> None:
        """Get ready to deploy quickly (local: warm the standby pool)."""
        ...

    def close(self) -> None:
        """Release what `prepare` holds (serving workloads are stopped by their owner)."""
        ...

    def sweep(self) -> Collection[Hashable]:
        """Stop anything of this runtime still running (a last line of defence); what it was."""
        ...


class LiveStatsSource(Protocol):
    """Live statistics of a serving version, merged across its workers and replicas."""

    def read(self, name: str, version: str, *,
             baseline: stats.Baseline | None = None) -> stats_store.Snapshot:
        """Every worker's cumulative statistics of ``name`` at ``version`` now, and a merged
        sample of the rows they scored (`errors.Transient` when they cannot be read)."""
        ...

    def window(self, current: stats_store.Snapshot, since: stats_store.Snapshot | None, *,
               version: str, baseline: stats.Baseline) -> stats.LiveStats:
        """The rows scored between two reads (``since`` None: since the start), merged."""
        ...

    def serves_elsewhere(self, name: str, version: str) -> bool:
        """True while a workload of ``name`` at ``version`` still runs (and may still write
        its final statistics), e.g. one that was just replaced and drains."""
        ...


class PredictionSource(Protocol):
    """The prediction log a model's servers keep (issue 20): every kept row of every version,
    with ``id``, ``version``, ``time``, ``input.<column>``, ``prediction`` and ``proba.<class>``
    columns. Embedded: `adapters.prediction_log.Directory` (the files under the stats root);
    Kubernetes: `adapters.kubernetes.pod_predictions.PodPredictions` (each pod's segments,
    copied through its export route, like the live statistics)."""

    def read(self, name: str, *, since: float | None = None,
             ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of ``name`` (newer than ``since``, or with ``ids`` only), oldest first."""
        ...


class LabelSource(Protocol):
    """The labels that came back for a model: the latest per id (``id``, ``label``,
    ``received``)."""

    def read(self, name: str) -> pd.DataFrame: ...


class StatusSink(Protocol):
    """Per-model conditions and one event per transition (local: ``state.json`` and
    ``events.jsonl``; Kubernetes: the custom resource's status and Events)."""

    def status(self, name: str) -> ModelStatus: ...

    def set(self, value: ModelStatus) -> None: ...

    def event(self, kind: str, *, model: str, commit: str | None, message: str,
              **extra: Any) -> None:
        """Record one transition (``kind`` like Deployed, DeployFailed, Retired, Reverted)."""
        ...

    def save(self) -> None:
        """Persist what was set since the last save."""
        ...


class StatusMirror(Protocol):
    """Where a store's statuses are published as well (Kubernetes: each ModelDeployment's
    status, with the failure the reconciler remembers); events reach it as a store listener."""

    def publish(self, value: ModelStatus, failure: plan.Failure | None) -> None:
        """Make ``value`` (and ``failure``) visible; a mirror skips what did not change."""
        ...

    def load(self) -> dict[str, tuple[ModelStatus, plan.Failure | None]]:
        """What was published before (after a restart), by model."""
        ...


class StateStore(StatusSink, Protocol):
    """A `StatusSink` that also remembers the reconciler's own state across restarts."""

    head: str | None
    """The commit last reconciled."""
    failures: dict[str, plan.Failure]
    """Versions that failed for a reason retrying cannot cure, by model."""
    backends: dict[str, dict[str, Any]]
    """`Handle.record` of what serves, by model (what `Workloads.recover` gets)."""

    def forget(self, name: str) -> None:
        """Drop everything known of model ``name`` (it was retired)."""
        ...
