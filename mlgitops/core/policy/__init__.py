"""Drift policy: one closed window of live rows -> keep | alert | revert, with its numbers.

Pure: no I/O, no clock (callers pass ``now``, seconds since the epoch), no randomness. The
monitor measures a window (`Evidence`), keeps a `History` per model, and executes what
`decide` returns; the revert itself is described by `revert_plan` before git runs.

Rules, in order (each decision carries a sentence saying which one applied):

1. **Inconclusive.** A window with fewer than ``minRows`` rows never acts; the streak of
   breached windows is left as it was.
2. **Breach.** A window breaches when the share of drifted features (against the serving
   version's baseline) is >= ``datasetShare``, or when the prediction distribution drifted.
   A window that does not breach resets the streak.
3. **Hysteresis.** Nothing happens until ``consecutiveWindows`` breached windows in a row;
   acting (alert or revert) starts a new streak.
4. **Attribution** (``attribution: previous-baseline``). A revert can only cure drift that is
   the new version's fault. It is, when either
   - the window fits the *previous* version's baseline clearly better than the current one's:
     its drifted share against the previous baseline is below ``datasetShare`` and at least
     `ATTRIBUTION_MARGIN` lower than against the current baseline (`fit_share`: both references
     laid on the same bins, compared with the same window counters); or
   - the predictions drifted while the inputs did not (share below ``datasetShare``): the
     model behaves unlike its own reference on data that looks like it.
   Otherwise the inputs moved away from both versions: alert only.
5. **Action, blockers, cooldown, cap.** ``action: alert`` or ``none`` never reverts; no revert
   without a previous version to return to (or when it is quarantined, or the same model);
   none within ``cooldownSeconds`` of the last automatic revert; at most ``maxReverts`` per
   ``revertPeriodSeconds``. Each of these turns a revert into an alert that says why.

Only reverts that landed count toward the cooldown and the cap: a REVERT decision's
``history`` already holds its time (the revert it asks for), but the caller keeps
`Decision.history_until_landed` until the revert commit is on the remote, then
`History.with_revert`; a revert that was refused, failed or was skipped never counts.

Modules: `rules` (`decide` and its records), `attribution` (the window against another
version's reference), `revert` (the revert commit, planned). Import the names below from here.
"""

from mlgitops.core.policy.attribution import Measure, against, fit_share, laid_on
from mlgitops.core.policy.revert import RevertPlan, revert_plan
from mlgitops.core.policy.rules import (
    ATTRIBUTION_MARGIN,
    Decision,
    Evidence,
    History,
    Verdict,
    attribute,
    decide,
)

__all__ = [
    "ATTRIBUTION_MARGIN",
    "Decision",
    "Evidence",
    "History",
    "Measure",
    "RevertPlan",
    "Verdict",
    "against",
    "attribute",
    "decide",
    "fit_share",
    "laid_on",
    "revert_plan",
]
