"""The deployment gate's cost: publish of a gated version against an ungated one, same run.

    .venv/bin/python bench/gate.py [--runs 5] [--trees 20] [--eval-rows 2000]

One repository whose bare remote has the validating hook (warm validator), two models:
``plain`` (published without evaluation: the hook loads and predicts it once) and ``gated``
(published with ``--evaluation`` and ``spec.performance.gate: accuracy, minRelativeChange 0``:
the hook recomputes the candidate's metrics and scores the serving version on the same data,
each in a sandboxed child). Each run publishes a new RandomForest version of each, alternating;
the label is separable so every candidate ties the serving version and passes. Prints p50 and
max per model and the ratio gated/plain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlgitops import settings
from mlgitops.adapters import git, validator
from mlgitops.authoring import repository
from mlgitops.authoring.publishing import publish

FEATURES = [f"f{i}" for i in range(8)]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    x["f0"] = np.sign(x.f0) * (np.abs(x.f0) + 0.5)  # a margin: every forest is exact
    x["label"] = (x.f0 > 0).astype(int)
    return x


def one(repo: Path, name: str, *, seed: int, trees: int, evaluation: pd.DataFrame | None) -> float:
    from sklearn.ensemble import RandomForestClassifier

    data = frame(3000, seed)
    model = RandomForestClassifier(n_estimators=trees, max_depth=6, random_state=seed).fit(
        data[FEATURES], data["label"])
    start = time.perf_counter()
    publish(model, data, name=name, repo=repo, target="label", quiet=True,
            evaluation_frame=evaluation)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trees", type=int, default=20)
    parser.add_argument("--eval-rows", type=int, default=2000)
    args = parser.parse_args()
    settings.telemetry_off()
    repo = Path(tempfile.mkdtemp(prefix="mlgitops-bench-gate-")) / "repo"
    remote = repository.init(repo)
    evaluation = frame(args.eval_rows, 999)
    one(repo, "plain", seed=1, trees=args.trees, evaluation=None)
    one(repo, "gated", seed=1, trees=args.trees, evaluation=evaluation)
    path = repo / "manifests" / "gated.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["performance"] = {"gate": [{"metric": "accuracy", "minRelativeChange": 0}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git.commit(repo, message="gate", paths=[str(path.relative_to(repo))])
    git.push(repo)
    times: dict[str, list[float]] = {"plain": [], "gated": []}
    for i in range(args.runs):
        for name in ("plain", "gated"):
            times[name].append(one(repo, name, seed=100 + i, trees=args.trees,
                                   evaluation=evaluation if name == "gated" else None))
    validator.stop(remote)
    for name, values in times.items():
        print(f"{name:6s} p50 {statistics.median(values):.3f} s  max {max(values):.3f} s  "
              f"all {' '.join(f'{v:.2f}' for v in values)}")
    ratio = statistics.median(times["gated"]) / statistics.median(times["plain"])
    print(f"gated/plain p50: {ratio:.2f}x ({args.eval_rows} evaluation rows, {args.trees} trees)")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    print("command: .venv/bin/python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
