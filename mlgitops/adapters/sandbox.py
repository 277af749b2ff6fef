"""Loading a model that is not serving yet, in a child process with limits.

The pre-receive hook and ``mlgitops validate`` prove that a model loads and predicts, but a
model file is untrusted input: the load happens in ``python -m mlgitops.adapters.sandbox``, a
child with an empty working directory, a minimal environment, no right to write files, and
caps on memory and CPU time. A crash, a hang or a memory bomb ends the child, and the caller
gets a sentence. Types and trees are checked (`mlflow_models.check_loadable`) before the child
loads anything, and again inside it.

A warm validator (the remote's, see `adapters.validator`) calls `warm` once: it imports what a
load needs, loads nothing, and from then on each check runs in a fresh child *forked* from it,
under the same limits, empty working directory, minimal environment and no right to write,
so a check costs a fork instead of an interpreter start and a scikit-learn import.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mlgitops import errors, telemetry
from mlgitops.core import trust

MEMORY_BYTES = 6 * 1024**3
CPU_SECONDS = 120
PREDICT_ROWS = 32


#: Modules a model load needs, imported once by a warm validator (never a model's own code).
WARM_IMPORTS = (
    "pandas", "pyarrow.parquet", "skops.io", "sklearn.ensemble", "sklearn.linear_model",
    "sklearn.tree", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.compose",
    "sklearn.impute", "sklearn.neighbors", "sklearn.svm", "sklearn.naive_bayes",
    "sklearn.dummy", "sklearn.feature_extraction", "sklearn.decomposition",
    "mlgitops.adapters.mlflow_models", "mlgitops.adapters.skops_files", "mlgitops.core.stats",
    "mlgitops.adapters.evaluation", "sklearn.metrics",
)

_warm = False


def warm() -> None:
    """Import what a load needs in this process; later checks fork from it (`load_check`).

    The process runs under the sandbox's memory cap from here on (`cap_memory`): what it
    reads of a push outside a child is bounded by the same limit as what a child loads.
    Then one load and predict of models made right here (nothing from a repository): the
    lazy first-use work of skops, pyarrow and scikit-learn is done once, not in every child.
    """
    import importlib

    global _warm
    cap_memory()
    for module in WARM_IMPORTS:
        importlib.import_module(module)
    _exercise()
    _warm = True


_MLMODEL = """\
flavors:
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
    skops_trusted_types: {types}
signature:
  inputs: '[{{"name": "a", "type": "double"}}, {{"name": "b", "type": "double"}}]'
  outputs: '[{{"type": "long"}}]'
"""


def _exercise() -> None:
    """Save, check, load and predict two small models built in this process (trusted)."""
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3})
    labels = (frame["a"] > 20).astype(int)
    estimators = (RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0),
                  LogisticRegression())
    with tempfile.TemporaryDirectory(prefix="mlgitops-warm-") as tmp:
        for i, estimator in enumerate(estimators):
            model_dir = Path(tmp) / str(i)
            model_dir.mkdir()
            skops.io.dump(estimator.fit(frame, labels), model_dir / "model.skops")
            types = sorted(skops.io.get_untrusted_types(file=model_dir / "model.skops"))
            (model_dir / "MLmodel").write_text(_MLMODEL.format(types=json.dumps(types)))
            frame.to_parquet(model_dir / "reference.parquet", index=False)
            answer = _check({"model_dir": str(model_dir), "trusted_types": types, "allow": []})
            if not answer.get("ok"):
                raise RuntimeError(f"the validator's own warm-up model did not load: {answer}")


def is_warm() -> bool:
    return _warm


def cap_memory() -> None:
    """Cap this process's address space at `MEMORY_BYTES`, as every sandboxed child's is
    (lowered only: a stricter limit someone set stays)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, MEMORY_BYTES)
    if soft == resource.RLIM_INFINITY or soft > cap:
        soft = cap
    resource.setrlimit(resource.RLIMIT_AS, (soft, cap))


def _limits() -> None:  # runs in the child between fork and exec (or after a warm fork)
    cap_memory()
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()


def _environment(home: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LC_ALL": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", **telemetry.OFF}
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine quirks numpy relies on
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def load_check(
    model_dir: Path,
    *,
    trusted_types: Sequence[str],
    policy: trust.Policy,
    timeout: float = 180.0,
) -> int:
    """Load the model and predict a few reference rows in the sandbox; return the rows predicted.

    A fresh child process does it: forked from this process once `warm` ran, else a new
    interpreter. ModelError says what failed: the child's own sentence, a signal that killed
    it, or a limit.
    """
    request: dict[str, object] = {"model_dir": str(model_dir.resolve()),
                                  "trusted_types": list(trusted_types),
                                  "allow": sorted(policy.allow)}
    rows = _run(request, model_dir, timeout=timeout).get("rows", 0)
    return rows if isinstance(rows, int) else 0


def evaluate(
    model_dir: Path,
    *,
    data: Path,
    label: str,
    trusted_types: Sequence[str],
    policy: trust.Policy,
    timeout: float = 180.0,
) -> dict[str, float]:
    """Load the model in the sandbox and score it on the labelled frame ``data``
    (`adapters.evaluation.score`): the metrics defined there, recomputed, never read."""
    request: dict[str, object] = {"model_dir": str(model_dir.resolve()),
                                  "trusted_types": list(trusted_types),
                                  "allow": sorted(policy.allow),
                                  "evaluation": str(data.resolve()), "label": label}
    found = _run(request, model_dir, timeout=timeout).get("metrics")
    if not isinstance(found, dict):
        raise errors.ModelError(f"{model_dir.name}: the sandbox returned no metrics; republish")
    return {str(k): float(v) for k, v in found.items()}


def predict(
    model_dir: Path,
    *,
    data: Path,
    trusted_types: Sequence[str],
    policy: trust.Policy,
    timeout: float = 180.0,
) -> dict[str, object]:
    """Load the model in the sandbox and predict the rows of the Parquet file ``data`` (the
    performance monitor scores a previous version on labelled rows this way, off any request
    path): ``prediction`` (a list), and ``proba`` and ``classes`` when it has
    ``predict_proba``."""
    request: dict[str, object] = {"model_dir": str(model_dir.resolve()),
                                  "trusted_types": list(trusted_types),
                                  "allow": sorted(policy.allow), "predict": str(data.resolve())}
    answer = _run(request, model_dir, timeout=timeout)
    if not isinstance(answer.get("prediction"), list):
        raise errors.ModelError(f"{model_dir.name}: the sandbox returned no predictions")
    return answer


def _run(request: dict[str, object], model_dir: Path, *, timeout: float) -> dict[str, object]:
    """One sandboxed child answers ``request``: its answer, or ModelError saying what failed."""
    with tempfile.TemporaryDirectory(prefix="mlgitops-sandbox-") as empty:
        if _warm:
            returncode, out, err = _forked(request, empty=empty, timeout=timeout, name=model_dir.name)
        else:
            returncode, out, err = _spawned(request, empty=empty, timeout=timeout,
                                            name=model_dir.name)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if returncode == 0 and answer.get("ok"):
        return dict(answer)
    if answer.get("error"):
        raise errors.ModelError(str(answer["error"])[:2000])
    if returncode < 0:
        name = signal.Signals(-returncode).name
        what = "ran out of CPU time" if name == "SIGXCPU" else f"was killed by {name}"
        raise errors.ModelError(
            f"{model_dir.name}: the process loading the model {what}; the model file is "
            "malformed or hostile: republish it"
        )
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise errors.ModelError(
        f"{model_dir.name}: the process loading the model failed (exit {returncode}: "
        f"{tail[0][:300]}); republish the model"
    )


def _too_slow(name: str, timeout: float) -> errors.ModelError:
    return errors.ModelError(
        f"{name}: loading the model took over {timeout:.0f}s in the sandbox; "
        "republish a model that loads quickly"
    )


def _spawned(request: dict[str, object], *, empty: str, timeout: float,
             name: str) -> tuple[int, bytes, bytes]:
    """``python -m mlgitops.adapters.sandbox`` under the limits: (status, stdout, stderr)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-B", "-m", "mlgitops.adapters.sandbox"],
            input=json.dumps(request).encode(), capture_output=True, cwd=empty,
            env=_environment(empty), timeout=timeout, preexec_fn=_limits,
        )
    except subprocess.TimeoutExpired as exc:
        raise _too_slow(name, timeout) from exc
    return proc.returncode, proc.stdout, proc.stderr


#: An answer is one short JSON line; a child writing more is cut off here.
MAX_ANSWER_BYTES = 64 * 1024


def _forked(request: dict[str, object], *, empty: str, timeout: float,
            name: str) -> tuple[int, bytes, bytes]:
    """A child forked from this warm process checks the model: (status, its answer, b"")."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            os.close(read_end)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # nothing inherited to write to (a log file, a socket)
                os.dup2(null, fd)
            os.closerange(3, write_end)
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            os.closerange(write_end + 1, limit if limit > write_end else 65536)
            _limits()
            os.chdir(empty)
            os.environ.clear()
            os.environ.update(_environment(empty))
            answer = _check(request)
            os.write(write_end, (json.dumps(answer) + "\n").encode())
            code = 0 if answer.get("ok") else 1
        finally:
            os._exit(code)
    os.close(write_end)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise _too_slow(name, timeout)
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            if len(out) < MAX_ANSWER_BYTES:
                out += chunk
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, bytes(out[:MAX_ANSWER_BYTES]), b""


def _check(request: dict[str, object]) -> dict[str, object]:
    """Load, then predict the first rows of the reference sample: the answer as a dict."""
    model_dir = Path(str(request["model_dir"]))
    try:
        import pandas as pd

        from mlgitops.adapters import mlflow_models

        trusted = request["trusted_types"]
        allow = request["allow"]
        assert isinstance(trusted, list) and isinstance(allow, list)
        model = mlflow_models.load(model_dir, trusted_types=[str(t) for t in trusted],
                                   policy=trust.Policy(allow=frozenset(str(a) for a in allow)))
        rows = 0
        reference = model_dir / "reference.parquet"
        if reference.is_file():
            from mlgitops.adapters import files

            files.check_parquet(reference, name=f"{model_dir.name}/reference.parquet")
            frame = pd.read_parquet(reference).head(PREDICT_ROWS)
            missing = [c for c in model.info.column_names if c not in frame.columns]
            if missing:
                raise errors.ModelError(
                    f"{model_dir.name}/reference.parquet: lacks the signature's columns {missing}; "
                    "republish the model"
                )
            rows = len(model.predict(frame))
        if request.get("evaluation"):
            from mlgitops.adapters import evaluation

            data = Path(str(request["evaluation"]))
            features, y = evaluation.split(
                evaluation.read_data(data, name=data.name), label=str(request["label"]),
                columns=list(model.info.column_names), where=data.name)
            return {"ok": True, "rows": rows,
                    "metrics": evaluation.score(model.estimator, features, y)}
        if request.get("predict"):
            return {"ok": True, "rows": rows, **_predict(model, Path(str(request["predict"])))}
    except errors.MlgitopsError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": f"{model_dir.name}: loading the model exceeded "
                         f"{MEMORY_BYTES // 1024**3} GiB; republish a smaller model"}
    except Exception as exc:
        return {"error": f"{model_dir.name}: the model does not load or predict "
                         f"({type(exc).__name__}: {str(exc)[:300]}); republish it"}
    return {"ok": True, "rows": rows}


def _predict(model: object, data: Path) -> dict[str, object]:
    """``model``'s predictions (and class probabilities) of the rows in ``data``."""
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(data)
    columns = list(getattr(getattr(model, "info", None), "column_names", None) or frame.columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise errors.ModelError(f"{data.name}: lacks the model's input columns {missing}")
    frame = frame[columns]
    out: dict[str, object] = {"prediction": np.asarray(model.predict(frame)).tolist()}  # type: ignore[attr-defined]
    estimator = getattr(model, "estimator", None)
    classes = getattr(estimator, "classes_", None)
    if classes is not None and callable(getattr(estimator, "predict_proba", None)):
        out["proba"] = np.asarray(estimator.predict_proba(frame), dtype=np.float64).tolist()  # type: ignore[union-attr]
        out["classes"] = np.asarray(classes).tolist()
    return out


def _child() -> int:
    """The spawned child: the request on stdin, one JSON line out."""
    answer = _check(json.loads(sys.stdin.read()))
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(_child())
