"""Commit-to-serving: from `git push` returning to the gateway answering with the new commit.

    .venv/bin/python bench/commit_to_serving.py [--publishes 12] [--poll-baseline 3]

Publishes alternating model versions into a fresh repository served by `mlgitops up` (in
process), while a concurrent client hammers the model's endpoint. Prints p50/p95 and the failed
requests. Baseline measured in the same run: the same controller learning of commits by polling
only (every 10 s, mlgitops' fallback; Argo CD's default is 180 s), for a few publishes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mlgitops import settings
from mlgitops.adapters import git
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish
from mlgitops.controller import run
from mlgitops.demo import examples
from mlgitops.demo.embedded import Traffic, free_port, wait_for_version

console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(repo: Path, models: list[object], frames: list[object], *, publishes: int,
            poll: float, hooks: bool, label: str) -> tuple[list[float], Traffic]:
    remote = Path(git.remote_url(repo) or "")
    hook = remote / "hooks" / "post-receive"
    saved = hook.read_text() if hook.exists() else None
    if not hooks and hook.exists():
        hook.unlink()
    cfg = settings.controller(repo, port=free_port(), poll_seconds=poll, monitor=False)
    times: list[float] = []
    try:
        with run.running(cfg) as ctl:
            base = ctl.base_url
            first = publish(models[0], frames[0], name="bench", repo=repo,
                            target=examples.TARGET, quiet=True)
            wait_for_version(base, "bench", first, timeout=180)
            traffic = Traffic(f"{base}/models/bench/invocations",
                              examples.credit_population(2000, seed=9).drop(columns=examples.TARGET))
            client = threading.Thread(target=traffic.run, daemon=True)
            client.start()
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(label, total=publishes)
                for i in range(publishes):
                    k = (i + 1) % len(models)
                    sha = publish(models[k], frames[k], name="bench", repo=repo,
                                  target=examples.TARGET, quiet=True, push=False)
                    git.push(repo)
                    pushed = time.perf_counter()
                    wait_for_version(base, "bench", sha, timeout=max(60.0, 3 * poll))
                    times.append(time.perf_counter() - pushed)
                    progress.advance(task)
                    time.sleep(0.5)
            traffic.stop.set()
            client.join(timeout=10)
    finally:
        if saved is not None and not hook.exists():
            hook.write_text(saved)
            hook.chmod(0o755)
    return times, traffic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--publishes", type=int, default=12)
    parser.add_argument("--poll-baseline", type=int, default=3,
                        help="publishes measured with polling only (0 skips the baseline)")
    args = parser.parse_args()
    settings.telemetry_off()
    work = Path(tempfile.mkdtemp(prefix="mlgitops-bench-"))
    repo = work / "repo"
    repository.init(repo)
    frames = [examples.credit_population(3000, seed=s, shift=0.2 * s) for s in (1, 2)]
    models = [examples.train_credit_model(f, trees=50, seed=s) for s, f in zip((1, 2), frames, strict=True)]
    hook_times, traffic = measure(repo, models, frames, publishes=args.publishes, poll=10.0,
                                  hooks=True, label="publishes (post-receive hook)")
    table = Table(title="commit-to-serving (push returned → endpoint reports the new commit)")
    table.add_column("trigger", no_wrap=True)
    for col in ("publishes", "p50 s", "p95 s", "max s", "requests ok", "failed"):
        table.add_column(col, justify="right")
    table.add_row("post-receive hook", str(len(hook_times)),
                  f"{statistics.median(hook_times):.3f}", f"{pct(hook_times, 0.95):.3f}",
                  f"{max(hook_times):.3f}", str(traffic.ok), str(traffic.failed))
    if args.poll_baseline:
        poll_times, poll_traffic = measure(repo, models, frames, publishes=args.poll_baseline,
                                           poll=10.0, hooks=False, label="publishes (polling)")
        table.add_row("poll 10 s (baseline)", str(len(poll_times)),
                      f"{statistics.median(poll_times):.3f}", f"{pct(poll_times, 0.95):.3f}",
                      f"{max(poll_times):.3f}", str(poll_traffic.ok), str(poll_traffic.failed))
        ratio = statistics.median(poll_times) / statistics.median(hook_times)
        console.print(f"median ratio polling/hook: {ratio:.1f}x (Argo CD's default poll is 180 s)")
    console.print(table)
    verdict = (statistics.median(hook_times) <= 1.0 and pct(hook_times, 0.95) <= 2.0
               and traffic.failed == 0)
    console.print(f"targets p50 <= 1 s, p95 <= 2 s, 0 failed: {'met' if verdict else 'NOT met'}")
    if traffic.errors_seen:
        console.print(f"first failure: {traffic.errors_seen[0]}")


if __name__ == "__main__":
    main()
