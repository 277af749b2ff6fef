"""Progressive delivery: what mirroring costs on the serving path, and breach -> revert commit.

    .venv/bin/python bench/rollout.py [--rounds 5] [--seconds 5] [--concurrency 16] [--reverts 3]
    .venv/bin/python bench/rollout.py --kubernetes [...]   (the same on the test cluster)

A fresh repository served by `mlgitops up` (in process, drift monitor on). v1 serves; v2 (a
good version) is published with ``spec.rollout.strategy: shadow`` and a shadow that never ends
in this bench, so every user request is copied to it.

1. **Mirroring cost.** In the same controller, processes and run, rounds alternate the shadow
   off (the split set aside: v2 runs but gets nothing) and on (each request copied to v2 after
   the user got v1's answer). Each round drives the gateway with the load client (``wrk`` when
   installed, else a Python client in its own process) for ``--seconds`` at ``--concurrency``.
   Printed: requests/s and p99 per round, medians, and the throughput ratio on/off (target:
   mirroring costs at most 10%, i.e. ratio >= 0.90). The copies go through a bounded queue: under
   saturation some are dropped (counted), never waited for.
2. **Breach -> revert commit.** ``--reverts`` times, a bad version (trained on a shifted
   population) is published under a shadow; live traffic of population A reaches it only as
   copies, its answers disagree with v1's, and the step's analysis fails. Measured: from the
   failed analysis to the revert commit pushed (the writer's ``revertSeconds``: git revert,
   quarantine, commit, push through the remote's hook), and the user requests the bad version
   answered (must be 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _load

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.controller import run
from mlgitops.controller.gateway import VERSION_HEADER
from mlgitops.core import layout
from mlgitops.demo import examples
from mlgitops.demo.embedded import free_port, wait_for_version

console = Console(width=150)
NAME = "credit-risk"
TARGET_RATIO = 0.90
NEVER = 100_000_000
#: never aborts (the cost part): agreement, errors and latency are not judged
LENIENT = {"minRows": 100, "drift": False, "minAgreement": 0.0, "maxErrorRate": 1.0,
           "maxLatencyRatio": 1000}
STRICT = {"minRows": 100, "minAgreement": 0.8, "maxLatencyRatio": 1000}


def set_rollout(repo: Path, rollout: dict[str, Any], message: str) -> None:
    path = repo / layout.manifest_path(NAME)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["rollout"] = rollout
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message=message, paths=[layout.MANIFESTS])


def body(seed: int = 7) -> bytes:
    rows = examples.credit_population(25, seed=seed).drop(columns=examples.TARGET)
    return json.dumps({"dataframe_records": rows.to_dict(orient="records")}).encode()


class Users:
    """A steady client (its own thread) counting answers by the version that gave them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.by_version: dict[str, int] = {}
        self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                i += 1
                try:
                    r = client.post(self.url, content=body(i % 50),
                                    headers={"content-type": "application/json"})
                    v = r.headers.get(VERSION_HEADER, "?")
                    self.by_version[v] = self.by_version.get(v, 0) + 1
                    self.failed += r.status_code != 200
                except httpx.HTTPError:
                    self.failed += 1
                time.sleep(0.005)

    def __enter__(self) -> Users:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def settle(counters: Any) -> None:
    """Wait until no copy was sent for a second (the mirror queue is empty)."""
    if counters is None:
        return
    last, quiet_since = counters.mirrored, time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        time.sleep(0.1)
        if counters.mirrored != last:
            last, quiet_since = counters.mirrored, time.monotonic()


def mirroring_cost(router: Any, url: str, args: argparse.Namespace) -> float:
    """Rounds of shadow off/on through ``url`` (a gateway over ``router``); the ratio."""
    split = router.split(NAME)
    assert split is not None, "v2 is not a candidate beside v1"
    rows = Table("round", "shadow", "req/s", "p50 ms", "p99 ms", "failures", "copies", "dropped")
    off: list[_load.LoadResult] = []
    on: list[_load.LoadResult] = []
    payload = body()
    _load.run(url, payload, concurrency=args.concurrency, duration=2.0)  # warm-up
    for r in range(args.rounds):
        for mirrored in (False, True):
            if mirrored:
                router.set_split(NAME, split)
            else:  # v2 still runs beside v1 (the reconciler sees it), but gets nothing
                router.freeze(NAME)
            counters = router.counters.get(NAME)
            settle(counters)  # copies of the last round still queued are sent first
            before = (counters.mirrored, counters.dropped) if counters else (0, 0)
            result = _load.run(url, payload, concurrency=args.concurrency, duration=args.seconds)
            after = (counters.mirrored, counters.dropped) if counters else (0, 0)
            (on if mirrored else off).append(result)
            rows.add_row(str(r + 1), "on" if mirrored else "off", f"{result.rps:.0f}",
                         f"{result.p50_ms:.1f}", f"{result.p99_ms:.1f}", str(result.failures),
                         str(after[0] - before[0]), str(after[1] - before[1]))
    router.set_split(NAME, split)
    console.print(rows)
    rps_off = statistics.median(x.rps for x in off)
    rps_on = statistics.median(x.rps for x in on)
    p99_off = statistics.median(x.p99_ms for x in off)
    p99_on = statistics.median(x.p99_ms for x in on)
    ratio = rps_on / rps_off if rps_off else 0.0
    console.print(f"median req/s: shadow off {rps_off:.0f}, on {rps_on:.0f} -> ratio "
                  f"{ratio:.3f} (target >= {TARGET_RATIO}: mirroring costs at most 10%) "
                  f"{'PASS' if ratio >= TARGET_RATIO else 'MISS'}")
    console.print(f"median p99: shadow off {p99_off:.1f} ms, on {p99_on:.1f} ms")
    return ratio


def reverts(ctl: Any, repo: Path, url: str, count: int, *, shift: float = 1.5) -> float:
    """``count`` bad versions (trained on a population shifted by ``shift``: at 1.0 some seeds
    agree with v1 on 80.6% of rows, above the strict analysis's 80%) under a strict
    shadow, each reverted by the monitor of ``ctl`` (anything with ``store``, ``router`` and
    ``trigger``); the median analysis -> revert."""
    rows = Table("run", "bad version", "analysis -> revert pushed s", "push s",
                 "user answers by it", "copies it answered")
    seconds: list[float] = []
    for i in range(count):
        git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)
        b = examples.credit_population(3000, shift=shift, seed=100 + i)
        with Users(url) as users:
            bad = str(publish(examples.train_credit_model(b, trees=30, seed=100 + i), b,
                              name=NAME, repo=repo, target=examples.TARGET, quiet=True,
                              message=f"bad version {i} on population B"))
            ctl.trigger("bench")
            deadline = time.monotonic() + 300
            while not [e for e in ctl.store.events(NAME)
                       if e["type"] == "Reverted" and e.get("reverted") == bad]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bad version {bad[:12]} was not reverted within 300 s")
                time.sleep(0.1)
            while ctl.router.split(NAME) is not None:
                time.sleep(0.1)
        (event,) = [e for e in ctl.store.events(NAME)
                    if e["type"] == "Reverted" and e.get("reverted") == bad]
        seconds.append(float(event["revertSeconds"]))
        rows.add_row(str(i + 1), bad[:12], f"{event['revertSeconds']:.3f}",
                     f"{event['pushSeconds']:.3f}", str(users.by_version.get(bad, 0)),
                     str(ctl.router.mirrored[(NAME, bad)]))
        if users.by_version.get(bad, 0):
            raise SystemExit(f"the shadowed bad version {bad[:12]} answered users")
    console.print(rows)
    console.print(f"median failed analysis -> revert commit pushed: "
                  f"{statistics.median(seconds):.3f} s")
    return statistics.median(seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reverts", type=int, default=3)
    ap.add_argument("--kubernetes", action="store_true",
                    help="on the local test cluster: the operator's runtime and gateway "
                         "(bench/rollout_k8s.py)")
    args = ap.parse_args()
    if args.kubernetes:
        import rollout_k8s

        return rollout_k8s.main(args)
    with tempfile.TemporaryDirectory(prefix="mlgitops-bench-rollout-") as tmp:
        repo = Path(tmp) / "models"
        repository.init(repo)
        a = examples.credit_population(3000, seed=1)
        publish(examples.train_credit_model(a, trees=30, seed=1), a, name=NAME, repo=repo,
                target=examples.TARGET, quiet=True, push=False, message="v1 on population A")
        set_rollout(repo, {"strategy": "shadow", "shadow": {"rows": NEVER}, "analysis": LENIENT},
                    "rollout: shadow")
        git.push(repo)
        cfg = settings.controller(repo, port=free_port(), poll_seconds=5.0)
        with run.running(cfg) as ctl:
            assert ctl.monitor is not None
            ctl.monitor.interval = 0.2
            base = ctl.base_url
            url = f"{base}/models/{NAME}/invocations"
            v1 = git.last_change(repo, "HEAD", list(layout.model_paths(NAME)))
            assert v1 is not None
            wait_for_version(base, NAME, v1, timeout=180)
            a2 = examples.credit_population(3000, seed=2)
            v2 = str(publish(examples.train_credit_model(a2, trees=30, seed=2), a2, name=NAME,
                             repo=repo, target=examples.TARGET, quiet=True,
                             message="v2 (good) under a shadow"))
            ctl.trigger("bench")
            deadline = time.monotonic() + 180
            while ctl.router.split(NAME) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("v2 did not start beside v1")
                time.sleep(0.1)
            console.print(f"v1 {v1[:12]} serves, v2 {v2[:12]} is its shadow; load: "
                          f"{'wrk' if _load.have_wrk() else 'python client'}, "
                          f"concurrency {args.concurrency}, {args.seconds:g} s per round")
            mirroring_cost(ctl.router, url, args)
            # the rest under a strict analysis: a version that disagrees is reverted
            git.run(repo, "pull", "-q", "--ff-only", "origin", layout.BRANCH)
            set_rollout(repo, {"strategy": "shadow", "shadow": {"rows": NEVER},
                               "analysis": STRICT}, "rollout: strict shadow")
            git.push(repo)
            ctl.trigger("bench")
            if args.reverts:
                reverts(ctl, repo, url, args.reverts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
