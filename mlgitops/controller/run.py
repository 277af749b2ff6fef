"""``mlgitops up``: gateway + reconcile loop + supervision (+ drift monitor), foreground.

Learns of commits from the remote's post-receive hook and the push webhook at once, and by
polling as a fallback. Ctrl-C (SIGINT) or SIGTERM stops servers, standbys and the gateway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from mlgitops import errors, settings, ui
from mlgitops.adapters import files, git, http_server, local_hosts, local_runtime
from mlgitops.authoring import repository
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import feedback as feedback_mod
from mlgitops.controller import gateway, grpc_gateway, rollouts, sinks
from mlgitops.controller import loop as loop_mod
from mlgitops.controller import monitor as monitor_mod
from mlgitops.controller import reconciler as rec
from mlgitops.controller import reports as reports_mod
from mlgitops.controller import revert as revert_mod
from mlgitops.controller import source as source_mod
from mlgitops.controller import state as state_mod
from mlgitops.core import layout

CONTROLLER_FILE = "controller.json"
LOCK_FILE = "controller.lock"


class Controller:
    """Everything ``mlgitops up`` runs, wired from settings; ``run()`` blocks until stopped.

    The embedded runtime: `local_runtime.LocalRuntime` is the reconciler's ``Workloads`` and
    `local_runtime.StatsFiles` the monitor's ``LiveStatsSource``.
    """

    def __init__(self, cfg: settings.ControllerSettings) -> None:
        self.cfg = cfg
        self.state_dir = cfg.state_dir
        self.remote = repository.remote_of(cfg.repo)
        refuse_tracked_state(cfg.repo, self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        legacy = cfg.repo / layout.LEGACY_STATE_DIR
        if legacy.is_dir() and legacy.resolve() != self.state_dir.resolve():
            ui.console.print(
                f"[yellow]{legacy} is no longer read: the controller's state lives in "
                f"{self.state_dir}, where no push or pull can write (a file in the working tree "
                "may have come from the remote, so it is not carried over). Delete it once no "
                "older controller runs.[/]", highlight=False)
        #: this run's identity: failures remembered by an earlier run are tried again
        self.run_id = uuid.uuid4().hex[:12]
        self.store = state_mod.Store(self.state_dir)
        self.router: rec.Router[local_runtime.Backend] = rec.Router()
        self.stats_root = self.state_dir / "stats"
        self.runtime = local_runtime.LocalRuntime(
            self.state_dir, standby=cfg.sync.standby, ready_timeout=cfg.sync.ready_timeout_seconds,
            stats_root=self.stats_root, max_workers=cfg.max_workers,
            # servers check a model's types again under the same policy (the repository's file)
            env={"MLGITOPS_TRUST_ALLOW": ",".join(sorted(cfg.trust.allow))},
            hosting=local_hosts.Hosting(mode=cfg.sync.hosting,
                                        models_per_host=cfg.sync.models_per_host,
                                        dedicated_bytes=cfg.sync.dedicated_bytes),
        )
        self.runtime.trust_allow = cfg.trust.allow
        self.source = source_mod.Source(
            self.state_dir, url=self.remote.url, branch=cfg.sync.branch, local=self.remote.local,
            policy=cfg.trust, allowed_signers=cfg.signing.allowed_signers,
        )
        self.reconciler = rec.Reconciler(
            source=self.source,
            workloads=self.runtime,
            store=self.store,
            router=self.router,
            endpoint=self.endpoint,
            drain_seconds=cfg.sync.drain_seconds,
            keep_previous_seconds=cfg.sync.keep_previous_seconds if cfg.monitor.enabled else 0.0,
            inputs=self._inputs,
            progressive=True,  # the gateway splits and mirrors a rollout's traffic
        )
        self.stop_event = threading.Event()
        self.loop = loop_mod.Loop(self.reconciler, poll_seconds=cfg.sync.poll_seconds,
                                  stop=self.stop_event, take_retry_requests=self._take_retry_requests,
                                  report=self._report, failed=self._failed)
        self.wake = self.loop.wake
        self.background: list[Callable[[threading.Event], None]] = []
        self.port = cfg.gateway.port
        self.grpc_port: int | None = None  # bound by `_serve_grpc` when asked for
        self.decisions = self._decisions()
        self.store.listeners.append(rollouts.RolloutRecorder(
            self.state_dir, self.decisions, self.router, base_url=lambda: self.public_url))
        self.monitor: monitor_mod.Monitor[local_runtime.Backend] | None = None
        if cfg.monitor.enabled:  # drift monitor: windows -> policy -> alerts and git reverts
            self.monitor = self._monitor()
            self.background.append(self.monitor.run)

    def _inputs(self) -> str:
        """What, besides a version, decides whether it deploys: the trust policy (its file read
        again, so a fix applies at once), signing, the worker cap, and this run."""
        policy = self.cfg.current_trust()
        if policy != self.source.policy:
            self.source.policy = policy
            self.runtime.trust_allow = policy.allow  # servers started from now load under it
        return f"{self.cfg.inputs()}:{self.run_id}"

    def _decisions(self) -> decision_log.Dispatcher:
        """The decision log and its sinks (`sinks.dispatcher`)."""
        return sinks.dispatcher(self.state_dir, clone=lambda: self.source.clone,
                                notify=self.cfg.notify, track=self.cfg.tracking)

    def _monitor(self) -> monitor_mod.Monitor[local_runtime.Backend]:
        """The drift monitor, wired to this controller's store, router, source and settings."""
        monitor = monitor_mod.Monitor(
            store=self.store,
            router=self.router,
            source=self.source,
            state_dir=self.state_dir,
            root=self.cfg.repo,
            url=self.remote.url,
            trigger=self.trigger,
            interval=self.cfg.monitor.interval_seconds,
            branch=self.cfg.sync.branch,
            report_base=self.public_url,
            dispatcher=self.decisions,
            writer=revert_mod.Writer(self.state_dir, url=self.remote.url,
                                     branch=self.cfg.sync.branch,
                                     signing_key=self.cfg.signing.key),
            live_stats=local_runtime.StatsFiles(self.stats_root, runtime=self.runtime),
            performance_interval=self.cfg.monitor.performance_seconds,
        )
        self.reconciler.on_deployed.append(monitor.on_deployed)
        return monitor

    @property
    def base_url(self) -> str:
        return f"http://{self.cfg.gateway.host}:{self.port}"

    @property
    def public_url(self) -> str:
        """Where people reach the gateway: ``--public-url``, else its own address."""
        return self.cfg.gateway.public_url or self.base_url

    def endpoint(self, name: str) -> str:
        return f"{self.base_url}/v2/models/{name}"

    def trigger(self, why: str) -> None:
        self.loop.trigger(why)

    def statuses(self) -> list[dict[str, Any]]:
        return [s.to_dict() for _, s in sorted(self.store.models.items())]

    # lifecycle --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise errors.ConfigError(
                f"another controller already runs for {self.cfg.repo} (lock {path}); stop it first"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _register(self) -> None:
        nf = self.remote.notify_file
        if nf is None:
            return
        url = f"http://127.0.0.1:{self.port}/hooks/git"
        lines = [ln for ln in (nf.read_text().splitlines() if nf.exists() else []) if ln != url]
        files.write_atomic(nf, ("\n".join([*lines, url]) + "\n").encode())

    def _unregister(self) -> None:
        nf = self.remote.notify_file
        if nf is None or not nf.exists():
            return
        url = f"http://127.0.0.1:{self.port}/hooks/git"
        lines = [ln for ln in nf.read_text().splitlines() if ln.strip() and ln != url]
        files.write_atomic(nf, ("\n".join(lines) + "\n").encode() if lines else b"")

    def _serve_gateway(self) -> tuple[uvicorn.Server, threading.Thread]:
        app = gateway.build(
            router=self.router,
            trigger=self.trigger,
            statuses=self.statuses,
            webhook_secret=self.cfg.gateway.webhook_secret,
            max_body_bytes=self.cfg.gateway.max_body_bytes,
            webhook_max_bytes=self.cfg.gateway.webhook_max_bytes,
            reports_root=self.state_dir / reports_mod.REPORTS,
            api_token=self.cfg.gateway.access.api_token,
            reports_private=self.cfg.gateway.access.reports_private,
            feedback=feedback_mod.local(self.state_dir, self.stats_root,
                                        webhook_secret=self.cfg.gateway.webhook_secret,
                                        api_token=self.cfg.gateway.access.api_token),
            mirror_budget=self.cfg.gateway.mirror_budget,
        )
        timeout = self.cfg.gateway.read_timeout_seconds
        config = uvicorn.Config(
            app,
            host=self.cfg.gateway.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            http=http_server.protocol(
                http_server.Limits(header_timeout=timeout, body_timeout=timeout)
            ),
            ws="none",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="gateway", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise errors.ConfigError(
                    f"the gateway could not listen on {self.cfg.gateway.host}:{self.port}; "
                    "is the port in use? pass --port"
                )
            time.sleep(0.02)
        return server, thread

    def _serve_grpc(self) -> grpc_gateway.Gateway | None:
        """The v2 gRPC API of every model on ``gateway.grpc_port`` (None: not asked for)."""
        if self.cfg.gateway.grpc_port is None:
            return None
        gw = grpc_gateway.Gateway(router=self.router, statuses=self.statuses,
                                  max_body_bytes=self.cfg.gateway.max_body_bytes)
        self.grpc_port = gw.start(self.cfg.gateway.host, self.cfg.gateway.grpc_port)
        ui.console.print(f"v2 gRPC API of every model on {self.cfg.gateway.host}:{self.grpc_port}")
        return gw

    def run(self, *, on_ready: Callable[[Controller], None] | None = None) -> None:
        with self._lock():
            # first what an earlier controller left: adopt its servers, stop all else of ours
            found = self.reconciler.adopt()
            if found.leftovers:
                ui.console.print(f"[yellow]stopped {len(found.leftovers)} server process(es) the "
                                 "previous controller left behind[/]")
            self.runtime.prepare()
            server, thread = self._serve_gateway()
            grpc_gw = self._serve_grpc()
            files.write_json(
                self.state_dir / CONTROLLER_FILE,
                {"pid": os.getpid(), "url": self.base_url, "port": self.port,
                 "grpcPort": self.grpc_port,
                 "startTime": local_runtime.start_time(os.getpid())},
            )
            self._register()
            sinks.start(self.decisions)
            workers = [
                threading.Thread(target=fn, args=(self.stop_event,), daemon=True)
                for fn in self.background
            ]
            try:
                for w in workers:
                    w.start()
                if on_ready is not None:
                    on_ready(self)
                self._loop()
            finally:
                self._unregister()
                self.stop_event.set()
                sinks.stop(self.decisions)
                self.reconciler.stop_all()
                self.runtime.close()
                leftovers = self.runtime.sweep()
                if leftovers:
                    ui.console.print(f"[yellow]stopped {len(leftovers)} stray server process(es)[/]")
                if grpc_gw is not None:
                    grpc_gw.stop()
                server.should_exit = True
                thread.join(timeout=10)
                (self.state_dir / CONTROLLER_FILE).unlink(missing_ok=True)

    def _loop(self) -> None:
        self.loop.run()

    def _report(self, outcome: rec.Outcome) -> None:
        for step in outcome.steps:
            if step.action.changes_live:
                ui.console.print(f"[bold]{step.name}[/]: {step.action.value} — {step.reason} "
                                 f"[dim]({outcome.seconds:.2f}s)[/]")

    def _failed(self, exc: errors.MlgitopsError, wait: float) -> None:
        ui.console.print(f"[yellow]reconcile failed, retrying in {wait:.0f}s:[/] {exc}")

    def _take_retry_requests(self) -> list[str]:
        asked = self.store.take_retry_requests()
        if asked:
            ui.console.print(f"retry asked for {', '.join(asked)}")
        return asked

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()


def up(cfg: settings.ControllerSettings, *, on_ready: Callable[[Controller], None] | None = None) -> None:
    """Run the controller in the foreground until SIGINT/SIGTERM."""
    ctl = Controller(cfg)

    def _stop(signum: int, frame: object) -> None:
        ctl.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    ui.console.print(
        f"mlgitops controller for [bold]{cfg.repo}[/] on {ctl.base_url} (Ctrl-C stops everything)"
    )
    ctl.run(on_ready=on_ready)
    ui.console.print("mlgitops controller stopped; no server left running")


@contextlib.contextmanager
def running(cfg: settings.ControllerSettings, *, timeout: float = 60.0) -> Iterator[Controller]:
    """A controller running in a thread of this process (notebooks, demo, tests)."""
    ctl = Controller(cfg)
    ready = threading.Event()
    failure: list[BaseException] = []

    def _run() -> None:
        try:
            ctl.run(on_ready=lambda c: ready.set())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=_run, name="controller", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        ctl.stop()
        raise errors.RuntimeFailure(f"the controller did not start within {timeout:.0f}s")
    if failure:
        raise failure[0]
    try:
        yield ctl
    finally:
        ctl.stop()
        thread.join(timeout=30)


def refuse_tracked_state(repo: Path, state_dir: Path) -> None:
    """ConfigError when the clone at ``repo`` tracks a path the controller keeps state in (the
    old ``.mlgitops/``, or the state directory when set inside the working tree): a pull would
    write a pusher's files where the controller reads its own."""
    paths = [layout.LEGACY_STATE_DIR]
    with contextlib.suppress(ValueError):
        inside = state_dir.resolve().relative_to(repo.resolve()).as_posix()
        if inside.split("/")[0] != ".git":
            paths.append(inside)
    try:
        tracked = git.text(repo, "ls-files", "--", *paths)
    except errors.GitError:
        return  # not a work tree (remote_of has checked it is a clone)
    if tracked:
        first = tracked.splitlines()[0]
        raise errors.ConfigError(
            f"{repo} tracks {first} in git, a path where the controller keeps its state; "
            f"remove it from the repository (git rm -r --cached {first.split('/')[0]} and "
            "push) before starting the controller")


def read_controller(repo: Path) -> dict[str, Any] | None:
    """What the last controller of ``repo`` recorded about itself (``controller.json``), if any."""
    info = files.read_json(settings.state_dir(repo) / CONTROLLER_FILE)
    return info if isinstance(info, dict) else None


def controller_alive(repo: Path, info: dict[str, Any] | None = None) -> bool:
    """True when the controller recorded for ``repo`` still runs.

    That is: its pid runs and started when the record says (a reused pid does not count), and,
    where ``/proc/locks`` can be read, that process holds the repository's controller lock.
    """
    info = read_controller(repo) if info is None else info
    if not info:
        return False
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    started = info.get("startTime")
    if not local_runtime.is_process(pid, str(started) if started else None):
        return False
    holders = local_runtime.flock_holders(settings.state_dir(repo) / LOCK_FILE)
    return holders is None or pid in holders
