"""mlgitops: GitOps for machine-learning models.

Git names the model version that serves; a controller deploys exactly that; a drift monitor
reverts a version in Git when live data shows it does not fit. For notebooks:

    import mlgitops
    sha = mlgitops.publish(estimator, reference_frame, name="credit-risk", repo="path/to/repo")
    result = mlgitops.drift.compare(reference_frame, current_frame)
    mlgitops.feedback("credit-risk", ids, labels, repo="path/to/repo")  # labels come back

Heavy imports (pandas, scikit-learn) happen on first use, not on ``import mlgitops``.
Importing mlgitops switches MLflow's and Evidently's telemetry off in this process and every
process it starts (whatever the environment said): nothing mlgitops runs calls home.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlgitops import telemetry

telemetry.off()

if TYPE_CHECKING:
    import mlgitops.drift as drift
    from mlgitops.authoring.publishing import publish as publish
    from mlgitops.controller.feedback import send as feedback

__all__ = ["drift", "feedback", "publish"]


def __getattr__(name: str) -> Any:
    if name == "publish":
        from mlgitops.authoring.publishing import publish

        return publish
    if name == "feedback":
        from mlgitops.controller.feedback import send

        return send
    if name == "drift":
        return importlib.import_module("mlgitops.drift")
    raise AttributeError(f"module 'mlgitops' has no attribute {name!r}")
