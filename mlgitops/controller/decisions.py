"""The decision log and its sinks: every decision appended to a file, then fanned out off the loop.

- `Log`: append-only JSON lines ``<state>/reports/decisions.jsonl`` (one `core.decisions.Decision`
  per line; a later line with the same id supersedes an earlier one, e.g. a revert once its commit
  is known), in segments (`adapters.decision_segments`), with a SQLite index beside it kept in
  step on every append and rebuilt from the log when missing or behind (`adapters.decision_index`):
  `page`, `find` and `window_history` read only the lines they return. Retention (``keep``,
  ``keep_days``) runs on the dispatcher's thread (`adapters.decision_retention`). Reading skips
  lines it cannot parse.
- `Sink`: anything with ``record(decision)``: the decision pages, outgoing webhooks, Evidently
  snapshots, MLflow runs.
- `Dispatcher`: ``submit(decision, sample)`` appends to the log, and returns at once; a background
  thread writes the window's live sample (parquet, bounded retention per model) and hands the
  decision to every sink, each in its own lane (queue and thread) with its own retries and
  back-off. A failing or slow sink is logged and never blocks a deploy, a revert, or another
  sink (bounded queues: a sink that falls too far behind misses decisions, which stay logged).

May NOT: decide anything (the policy does) or act on Git.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from mlgitops import ui
from mlgitops.adapters import clock as system_clock
from mlgitops.adapters import decision_index, decision_retention
from mlgitops.adapters import decision_segments as segments
from mlgitops.core import clock as clock_mod
from mlgitops.core import decisions, manifest

LOG_FILE = segments.ACTIVE
ROTATED_FILE = "decisions.1.jsonl"
SAMPLES = "samples"
PRUNE_EVERY_SECONDS = 86_400.0
"""Retention runs after a segment is rotated, and at least this often (on the sinks' thread)."""


class Sink(Protocol):
    """Where decisions go besides the log; ``record`` may raise (the dispatcher retries)."""

    def record(self, decision: decisions.Decision) -> None: ...


def log_path(reports_root: Path) -> Path:
    return reports_root / LOG_FILE


def samples_dir(state_dir: Path, model: str) -> Path:
    return state_dir / SAMPLES / model


class Log:
    """The append-only decision log of one controller (thread-safe), and its index.

    ``keep`` / ``keep_days``: retention (None: no limit of that kind), applied by `prune`."""

    def __init__(self, reports_root: Path, *, max_bytes: int = 64 * 1024 * 1024,
                 keep: int | None = None, keep_days: float | None = None,
                 clock: clock_mod.Clock = system_clock.SYSTEM) -> None:
        self.root = reports_root
        self.path = log_path(reports_root)
        self.max_bytes = max_bytes
        self.keep = keep
        self.keep_days = keep_days
        self.clock = clock
        self._lock = threading.Lock()
        self._next_prune = clock_mod.NEVER
        self.pruned = 0
        """Decisions retention removed since this log was opened."""

    def append(self, decision: decisions.Decision) -> None:
        """The record's line, then the index (a crash between the two: the next reader indexes
        the line)."""
        line = (decision.to_json() + "\n").encode()
        with self._lock:
            if segments.append(self.root, line, max_bytes=self.max_bytes):
                self._next_prune = clock_mod.NEVER
            decision_index.sync(self.root)

    def rotate(self) -> None:
        with self._lock:
            segments.rotate(self.root)
            decision_index.sync(self.root)

    @property
    def prune_due(self) -> bool:
        return ((self.keep is not None or self.keep_days is not None)
                and self.clock.monotonic() >= self._next_prune)

    def prune(self) -> decision_retention.Pruned | None:
        """Apply retention now: drop what is too old or too many from the log, and their pages.

        None when there is no index to prune with (nothing is dropped then)."""
        self._next_prune = self.clock.monotonic() + PRUNE_EVERY_SECONDS
        try:
            done = decision_retention.prune(
                self.root, keep=self.keep,
                keep_seconds=None if self.keep_days is None else self.keep_days * 86_400.0,
                now=self.clock.wall(), rotate=self.rotate)
        except decision_index.Unavailable:
            return None
        by_model: dict[str, set[str]] = {}
        for model, ident in done.dropped:
            by_model.setdefault(model, set()).add(ident)
        for model, idents in by_model.items():  # a page and its Evidently report: <id>.*
            if not manifest.valid_name(model):
                continue
            try:
                names = os.listdir(self.root / model)
            except OSError:
                continue
            for name in names:
                if name.split(".", 1)[0] in idents:
                    with contextlib.suppress(OSError):
                        (self.root / model / name).unlink()
        self.pruned += len(done.dropped)
        return done

    def all(self) -> list[decisions.Decision]:
        return read(self.root)

    def find(self, model: str, ident: str) -> decisions.Decision | None:
        return find(self.root, model, ident)


def read(reports_root: Path, *, model: str | None = None) -> list[decisions.Decision]:
    """Every decision recorded under ``reports_root`` (of ``model`` only when given), oldest first.

    A record written again (same id) replaces the earlier one in place. Reads them all: pages
    use `page`."""
    return list(decision_index.each(reports_root, decision_index.Filter(model=model)))


def each_acted(reports_root: Path) -> Iterator[decisions.Decision]:
    """Every decision but the quiet windows, oldest first, a batch at a time."""
    return decision_index.each(reports_root, decision_index.Filter(kinds=decision_index.ACTED))


def page(reports_root: Path, *, model: str | None = None,
         kinds: frozenset[decisions.Kind] | None = None, limit: int = 100, offset: int = 0,
         before: str | None = None, summary: bool = False) -> decision_index.Page:
    """A page of decisions, newest first (`decision_index.page`); ValueError for a bad cursor."""
    return decision_index.page(reports_root, decision_index.Filter(model=model, kinds=kinds),
                               limit=limit, offset=offset, before=before, summary=summary)


def find(reports_root: Path, model: str, ident: str) -> decisions.Decision | None:
    d = decision_index.find(reports_root, ident)
    return d if d is not None and d.model == model else None


def window_history(reports_root: Path, decision: decisions.Decision,
                   *, limit: int = 50) -> list[decisions.Decision]:
    """The windows of ``decision``'s model and version up to it (itself included), oldest first."""
    if not decision.kind.window:
        return []
    got = decision_index.windows(reports_root, model=decision.model, version=decision.version,
                                 until=decision.at, limit=limit)
    return [d for d in got if d.features]


class Rollouts:
    """Which deploy records are new: one per model and version while no other version deployed.

    A controller restart (or a server restarted after it died) starts the same commit again;
    that is not another decision, so `/reports/` lists one deploy per commit. Seeded once from
    the log (the last deploy of each model), then kept in memory.
    """

    def __init__(self, reports_root: Path) -> None:
        self.root = reports_root
        self._lock = threading.Lock()
        self._last: dict[str, str | None] | None = None

    def new_deploy(self, model: str, version: str | None) -> bool:
        """Whether a deploy of ``version`` is a new record (and remember it as the last)."""
        with self._lock:
            if self._last is None:
                self._last = {m: d.version for m, d in decision_index.latest_of_kind(
                    self.root, decisions.Kind.DEPLOY).items()}
            if model in self._last and self._last[model] == version:
                return False
            self._last[model] = version
            return True


Sample = pd.DataFrame | Callable[[], pd.DataFrame]
"""A decision's live rows: a frame, or a call that reads them (on the dispatcher's thread)."""


@dataclass(frozen=True)
class _Job:
    decision: decisions.Decision
    sample: Sample | None
    replay: bool = False
    """Only sinks that rebuild (``replays = True``, e.g. the pages) get it; nobody is notified."""


@dataclass(frozen=True)
class Retry:
    """Per-sink retries: ``attempts`` in all, waiting ``first``, then doubling up to ``cap``."""

    attempts: int = 4
    first: float = 0.5
    cap: float = 8.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.cap)


class _Lane:
    """One sink's own queue and thread: a slow or failing sink never delays another."""

    def __init__(self, sink: Sink, owner: Dispatcher, size: int) -> None:
        self.sink = sink
        self.owner = owner
        self.name = type(sink).__name__
        self.replays = bool(getattr(sink, "replays", False))
        self.queue: queue.Queue[decisions.Decision | None] = queue.Queue(maxsize=size)
        self.thread: threading.Thread | None = None

    def put(self, decision: decisions.Decision) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._work, name=f"decisions-{self.name}",
                                           daemon=True)
            self.thread.start()
        try:
            self.queue.put_nowait(decision)
        except queue.Full:
            self.owner.dropped += 1
            ui.console.print(f"[yellow]{self.name} is behind:[/] {decision.id} is logged but "
                             "not given to it")

    def _work(self) -> None:
        while True:
            decision = self.queue.get()
            try:
                if decision is None:
                    return
                self.owner._deliver(self, decision)
            except Exception as exc:  # the lane outlives any one decision
                ui.console.print(f"[red]{self.name} failed:[/] {type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()


class Dispatcher:
    """Log every decision at once; write its sample, then give it to each sink in its own lane."""

    def __init__(
        self,
        *,
        log: Log,
        state_dir: Path,
        sinks: Sequence[Sink] = (),
        retry: Retry | None = None,
        keep_samples: int = 200,
        queue_size: int = 256,
        on_error: Callable[[str, decisions.Decision, str], None] | None = None,
    ) -> None:
        self.log = log
        self.state_dir = state_dir
        self.retry = retry or Retry()
        self.keep_samples = keep_samples
        """Live samples kept per model (the oldest go first)."""
        self.on_error = on_error
        self._size = queue_size
        self._lanes: list[_Lane] = [_Lane(s, self, queue_size) for s in sinks]
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.dropped = 0
        self.failures: list[tuple[str, str, str]] = []
        """Recent (sink, decision id, error) of records that failed every attempt (bounded)."""

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes]

    def add(self, sink: Sink) -> None:
        self._lanes.append(_Lane(sink, self, self._size))

    def sample_path(self, model: str, ident: str) -> Path:
        return samples_dir(self.state_dir, model) / f"{ident}.parquet"

    def submit(self, decision: decisions.Decision, sample: Sample | None = None) -> None:
        """Append to the log now; the rest later. Never raises, never blocks for long.

        ``sample`` may be a call that reads the rows: it runs on the dispatcher's thread."""
        self.log_only(decision)
        self._put(_Job(decision, None if sample is None
                       else sample if callable(sample) else sample.copy()))

    def resend(self, decision: decisions.Decision, *, log: bool = False) -> None:
        """Give a recorded decision again to the sinks that rebuild (``replays = True``)."""
        if log:
            self.log_only(decision)
        self._put(_Job(decision, None, replay=True))

    def log_only(self, decision: decisions.Decision) -> None:
        """Append to the log without calling sinks (e.g. a revert before its push)."""
        try:
            self.log.append(decision)
        except OSError as exc:
            ui.console.print(f"[red]decision log:[/] cannot append {decision.id}: {exc}")

    def _put(self, job: _Job) -> None:
        self.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            ui.console.print(f"[yellow]decision sinks are behind:[/] {job.decision.id} is "
                             "logged but not sent")

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._work, name="decision-sinks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking decisions; sinks finish what they hold (retries end at once)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        for lane in self._lanes:
            with contextlib.suppress(queue.Full):
                lane.queue.put_nowait(None)
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *(lane.thread for lane in self._lanes)]:
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))

    def wait(self, timeout: float = 60.0, *, only: tuple[type, ...] | None = None) -> bool:
        """Block until submitted decisions went through the sinks (of types ``only``, when
        given); False on timeout."""
        deadline = time.monotonic() + timeout
        lanes = [lane for lane in self._lanes if only is None or isinstance(lane.sink, only)]
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and all(
                    lane.queue.unfinished_tasks == 0 for lane in lanes):
                return True
            time.sleep(0.05)
        return False

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._handle(job)
            except Exception as exc:  # the worker outlives any one decision
                ui.console.print(f"[red]decision sinks failed:[/] {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _handle(self, job: _Job) -> None:
        d = job.decision
        if job.sample is not None and d.sample_path:
            try:
                frame = job.sample() if callable(job.sample) else job.sample
            except Exception as exc:  # reading the rows is never worth losing the decision
                ui.console.print(f"[yellow]decision sample[/] of {d.id} not read: {exc}")
                frame = None
            if frame is not None and not frame.empty:
                self._write_sample(Path(d.sample_path), frame, model=d.model)
        for lane in list(self._lanes):
            if job.replay and not lane.replays:
                continue
            lane.put(d)
        if self.log.prune_due:
            self.log.prune()

    def _deliver(self, lane: _Lane, decision: decisions.Decision) -> None:
        delays = self.retry.delays()
        while True:
            try:
                lane.sink.record(decision)
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                delay = next(delays, None)
                if delay is None or self._stopping.is_set():
                    self.failures = [*self.failures[-49:], (lane.name, decision.id, error)]
                    ui.console.print(f"[yellow]{lane.name}[/] could not record {decision.id}: "
                                     f"{error}")
                    if self.on_error is not None:
                        with contextlib.suppress(Exception):
                            self.on_error(lane.name, decision, error)
                    return
                self._stopping.wait(delay)

    def _write_sample(self, path: Path, sample: pd.DataFrame, *, model: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            sample.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except Exception as exc:  # pyarrow raises many types; a sample is never worth a crash
            ui.console.print(f"[yellow]decision sample[/] {path.name} not written: {exc}")
            return
        prune(path.parent, keep=self.keep_samples)


def prune(folder: Path, *, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest ``*.parquet`` files of ``folder``; the removed ones."""
    try:
        files = sorted((p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file()),
                       key=lambda p: (p.stat().st_mtime, p.name))
    except OSError:
        return []
    gone = files[: max(len(files) - keep, 0)]
    for p in gone:
        with contextlib.suppress(OSError):
            p.unlink()
    return gone


def replay(sinks: Iterable[Sink], records: Iterable[decisions.Decision]) -> None:
    """Give recorded decisions to sinks again (e.g. pages rebuilt after the state was lost)."""
    for d in records:
        for sink in sinks:
            sink.record(d)
