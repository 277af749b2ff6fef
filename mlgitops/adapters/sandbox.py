"""Loading a model that is not serving yet, in a child process with limits.

The pre-receive hook and ``mlgitops validate`` prove that a model loads and predicts, but a
model file is untrusted input: the load happens in ``python -m mlgitops.adapters.sandbox``, a
child with an empty working directory, a minimal environment, no right to write files, and
caps on memory and CPU time. A crash, a hang or a memory bomb ends the child, and the caller
gets a sentence. Types and trees are checked (`mlflow_models.check_loadable`) before the child
loads anything, and again inside it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlgitops import errors, telemetry
from mlgitops.core import trust

MEMORY_BYTES = 6 * 1024**3
CPU_SECONDS = 120
PREDICT_ROWS = 32


def _limits() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()


def load_check(
    model_dir: Path,
    *,
    trusted_types: Sequence[str],
    policy: trust.Policy,
    timeout: float = 180.0,
) -> int:
    """Load the model and predict a few reference rows in the sandbox; return the rows predicted.

    ModelError says what failed: the child's own sentence, a signal that killed it, or a limit.
    """
    request = {"model_dir": str(model_dir.resolve()), "trusted_types": list(trusted_types),
               "allow": sorted(policy.allow)}
    with tempfile.TemporaryDirectory(prefix="mlgitops-sandbox-") as empty:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": empty, "LC_ALL": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", **telemetry.OFF}
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine quirks numpy relies on
            if key in os.environ:
                env[key] = os.environ[key]
        try:
            proc = subprocess.run(
                [sys.executable, "-B", "-m", "mlgitops.adapters.sandbox"],
                input=json.dumps(request).encode(), capture_output=True, cwd=empty, env=env,
                timeout=timeout, preexec_fn=_limits,
            )
        except subprocess.TimeoutExpired as exc:
            raise errors.ModelError(
                f"{model_dir.name}: loading the model took over {timeout:.0f}s in the sandbox; "
                "republish a model that loads quickly"
            ) from exc
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if proc.returncode == 0 and answer.get("ok"):
        return int(answer.get("rows", 0))
    if answer.get("error"):
        raise errors.ModelError(str(answer["error"])[:2000])
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        what = "ran out of CPU time" if name == "SIGXCPU" else f"was killed by {name}"
        raise errors.ModelError(
            f"{model_dir.name}: the process loading the model {what}; the model file is "
            "malformed or hostile: republish it"
        )
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise errors.ModelError(
        f"{model_dir.name}: the process loading the model failed (exit {proc.returncode}: "
        f"{tail[0][:300]}); republish the model"
    )


def _child() -> int:
    """Load, then predict the first rows of the reference sample; one JSON line out."""
    request = json.loads(sys.stdin.read())
    model_dir = Path(request["model_dir"])
    try:
        import pandas as pd

        from mlgitops.adapters import mlflow_models

        model = mlflow_models.load(model_dir, trusted_types=request["trusted_types"],
                                   policy=trust.Policy(allow=frozenset(request["allow"])))
        rows = 0
        reference = model_dir / "reference.parquet"
        if reference.is_file():
            frame = pd.read_parquet(reference).head(PREDICT_ROWS)
            missing = [c for c in model.info.column_names if c not in frame.columns]
            if missing:
                raise errors.ModelError(
                    f"{model_dir.name}/reference.parquet: lacks the signature's columns {missing}; "
                    "republish the model"
                )
            rows = len(model.predict(frame))
    except errors.MlgitopsError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except MemoryError:
        print(json.dumps({"error": f"{model_dir.name}: loading the model exceeded "
                                   f"{MEMORY_BYTES // 1024**3} GiB; republish a smaller model"}))
        return 1
    except Exception as exc:
        print(json.dumps({"error": f"{model_dir.name}: the model does not load or predict "
                                   f"({type(exc).__name__}: {str(exc)[:300]}); republish it"}))
        return 1
    print(json.dumps({"ok": True, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
