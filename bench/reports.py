"""Reports that stay fast for a year: ``/reports/`` and a model's decision list at 20k and 500k
decisions, through the log's index against the whole-log read it replaces, same run.

    .venv/bin/python bench/reports.py [--sizes 20000,500000] [--repeat 15] [--keep DIR]

For each size it writes a decision log as the controller does (JSON-lines segments of 64 MB,
then the index built from them: the time of that rebuild is printed too), with realistic
records: ten models closing a window a minute, each window a full record (three features and the
prediction against both baselines, the prediction distributions: ~2 KB, as `core.decisions`
writes them), mostly quiet (``pass``), with breaches, alerts, reverts and deploys among them,
and the page files of the decisions that acted.

Timed, over real HTTP on loopback (the gateway app as `mlgitops up` and the operator serve it):
``GET /reports/`` (HTML: the newest 100 decisions that acted), ``GET /reports/<model>/`` (HTML)
and ``GET /reports/<model>/?format=json&kind=all`` (the newest 100 of every kind), median of
``--repeat`` requests; plus the cost of one append (log line + index) against the line alone.
The baseline is the old path in the same run: every line of every segment read and parsed
(`decisions.latest`), filtered, then rendered (median of 3 at 20k; one call at 500k, as each
takes about a minute). Target (issue 21): <= 100 ms for the index and a model's list at 500k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import uvicorn

from mlgitops.adapters import decision_index
from mlgitops.adapters import decision_segments as segments
from mlgitops.controller import decision_pages, gateway
from mlgitops.controller import decisions as decision_log
from mlgitops.controller import reconciler as rec
from mlgitops.core import decision_page, decisions

MODELS = [f"model-{i}" for i in range(10)]
SEGMENT_BYTES = 64 * 1024 * 1024
START = 1_780_000_000.0


def template() -> dict[str, object]:
    """One full window record (features against both baselines, distributions)."""
    score = {"method": "wasserstein", "score": 0.0412, "threshold": 0.1, "drifted": False}
    features = [{"name": n, **score, "restored": dict(score)} for n in ("age", "income", "plan")]
    dist = [{"label": lbl, "bins": [f"[{i / 10:.3g}, {(i + 1) / 10:.3g})" for i in range(12)],
             "shares": [round(1 / 12, 6)] * 12}
            for lbl in ("serving baseline", "previous baseline", "live")]
    d = decisions.Decision(
        id="x", model="x", kind=decisions.Kind.PASS, at=START, version="b" * 40,
        previous_version="a" * 40, verdict="3 of 3 feature(s) within thresholds (share 0.00)",
        features=tuple(decisions.Feature.from_dict(f) for f in features),
        prediction=decisions.Feature.from_dict({**features[0], "name": "prediction"}),
        share=0.0, thresholds={"windowRows": 500, "minRows": 300, "datasetShare": 0.5,
                               "consecutiveWindows": 2, "cooldownSeconds": 600.0,
                               "maxReverts": 3, "revertPeriodSeconds": 86400.0,
                               "action": "revert", "attribution": "both",
                               "attributionMargin": 0.1},
        window=1, rows=500, report_url="https://ml.example.com/reports/x/x",
        digest="sha256:" + "2" * 64, policy_verdict="pass", fit_current=0.9,
        fit_previous=0.4, streak=0, needed=2,
        distributions=tuple(decisions.Distribution.from_dict(x) for x in dist))
    return d.to_dict()


def kind_of(i: int) -> decisions.Kind:
    r = (i * 7919) % 1000
    if r < 20:
        return decisions.Kind.BREACH
    if r < 25:
        return decisions.Kind.ALERT
    if r < 26:
        return decisions.Kind.REVERT
    if r < 28:
        return decisions.Kind.DEPLOY
    return decisions.Kind.PASS


def write_log(root: Path, n: int) -> int:
    """``n`` records in 64 MB segments and the page files of those that acted; the bytes."""
    root.mkdir(parents=True)
    base = template()
    ordinal, out = 1, (root / "decisions.1.jsonl").open("wb")
    size = total = 0
    acted: list[tuple[str, str]] = []
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        at = START + 60.0 * (i // len(MODELS)) + (i % len(MODELS))
        kind = kind_of(i)
        ident = decisions.make_id(model=model, kind=kind, at=at, version="b" * 40)
        rec_ = {**base, "id": ident, "model": model, "kind": kind.value, "at": at,
                "time": decisions.iso(at), "policyVerdict": kind.value,
                "reportUrl": f"https://ml.example.com/reports/{model}/{ident}",
                "commit": "c" * 40 if kind is decisions.Kind.REVERT else None}
        line = (json.dumps(rec_, separators=(",", ":")) + "\n").encode()
        if size + len(line) > SEGMENT_BYTES:
            out.close()
            ordinal += 1
            out = (root / f"decisions.{ordinal}.jsonl").open("wb")
            size = 0
        out.write(line)
        size += len(line)
        total += len(line)
        if kind is not decisions.Kind.PASS:
            acted.append((model, ident))
    out.close()
    os.replace(root / f"decisions.{ordinal}.jsonl", root / segments.ACTIVE)
    for model, ident in acted:
        page = decision_pages.page_file(root, model, ident)
        page.parent.mkdir(exist_ok=True)
        page.write_bytes(b"<!doctype html><p>page</p>")
    return total


def old_index(root: Path, model: str | None, *, kinds: frozenset[decisions.Kind] | None) -> str:
    """What ``/reports/`` did before the index: the whole log read and parsed, then rendered."""
    rows = [d for d in segments.read_all(root) if model is None or d.model == model]
    shown = [d for d in reversed(rows) if kinds is None or d.kind in kinds]
    return decision_page.index(shown[:100], model=model,
                               nav=decision_page.Nav(total=len(shown), more=len(shown) > 100))


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def serve(root: Path) -> tuple[str, uvicorn.Server, threading.Thread]:
    app = gateway.build(router=rec.Router(), trigger=lambda why: None, statuses=lambda: [],
                        webhook_secret=None, reports_root=root)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def measure(n: int, work: Path, repeat: int, *, baseline: bool = True,
            keep: bool = False) -> None:
    root = work / f"reports-{n}"
    start = time.perf_counter()
    if keep and (root / segments.ACTIVE).exists():  # written by an earlier --keep run
        size = sum(s.size for s in segments.segments(root))
    else:
        shutil.rmtree(root, ignore_errors=True)
        size = write_log(root, n)
    print(f"\n{n} decisions: {size / 1e6:.0f} MB in {len(segments.segments(root))} segment(s) "
          f"(written in {time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    decision_index.sync(root)
    db = sum(p.stat().st_size for p in root.glob(f"{decision_index.INDEX_FILE}*"))
    print(f"  index built from the log: {time.perf_counter() - start:.1f} s, {db / 1e6:.0f} MB")
    url, server, thread = serve(root)
    model = MODELS[3]
    cases = [
        ("/reports/ (HTML)", "/reports/", None, decision_index.ACTED),
        (f"/reports/{model}/ (HTML)", f"/reports/{model}/", model, decision_index.ACTED),
        (f"/reports/{model}/?format=json&kind=all", f"/reports/{model}/?format=json&kind=all",
         model, None),
    ]
    old_repeat = 3 if n <= 50_000 else 1
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for label, path, m, kinds in cases:
                client.get(path).raise_for_status()  # warm
                new = median_ms(partial(client.get, path), repeat)
                verdict = "meets" if new <= 100 else "MISSES"
                if not baseline:
                    print(f"  {label:<44} index {new:8.1f} ms ({verdict} <= 100 ms)")
                    continue
                old = median_ms(partial(old_index, root, m, kinds=kinds), old_repeat)
                print(f"  {label:<44} index {new:8.1f} ms   whole log {old:9.0f} ms "
                      f"(x{old / new:,.0f}; {verdict} <= 100 ms)")
            deep = client.get("/reports/?format=json&kind=all&limit=100").json()
            for _ in range(50):
                nxt = deep["page"]["next"]
                deep = client.get(nxt).json()
            t = median_ms(lambda: client.get(nxt).raise_for_status(), repeat)
            print(f"  51st page by cursor (JSON, every kind)        {t:8.1f} ms")
    finally:
        server.should_exit = True
        thread.join(10)
    log = decision_log.Log(root)
    d = decisions.Decision.from_dict({**template(), "id": decisions.make_id(
        model=MODELS[0], kind=decisions.Kind.PASS, at=START - 1, version="b" * 40),
        "model": MODELS[0], "at": START - 1})
    line = (d.to_json() + "\n").encode()
    plain = median_ms(lambda: segments.append(root, line, max_bytes=1 << 40), repeat)
    full = median_ms(lambda: log.append(d), repeat)
    print(f"  one append: log line {plain:.2f} ms, line + index {full:.2f} ms")
    if not keep:
        shutil.rmtree(root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,500000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", type=Path, default=None,
                        help="Work directory, kept (default: a temporary one, removed).")
    parser.add_argument("--no-baseline", action="store_true",
                        help="Skip the whole-log reads (to look at the index alone).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mlgitops-bench-reports-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"median of {args.repeat} requests over HTTP on loopback; baseline: the whole log "
          "read as before, same run")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            measure(n, work, args.repeat, baseline=not args.no_baseline,
                    keep=args.keep is not None)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
