"""The revert, planned before git runs: the path-scoped commit, its message, trailers and the
quarantine entry (`controller.revert` executes it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlgitops.core import layout, quarantine
from mlgitops.core.policy.rules import Decision, Verdict, fmt_number


@dataclass(frozen=True)
class RevertPlan:
    """Everything the revert commit consists of; the git adapter only executes it."""

    name: str
    reverted: str
    """The commit whose version is reverted (the model's serving version)."""
    restore_from: str
    """The revision whose content of `paths` returns (the parent of `reverted`)."""
    previous: str | None
    """The version whose content returns (the last change of `paths` before `reverted`)."""
    paths: tuple[str, ...]
    entry: quarantine.Entry
    message: str
    trailers: Mapping[str, str]

    @property
    def commit_paths(self) -> tuple[str, ...]:
        return (*self.paths, layout.QUARANTINE)


def revert_plan(
    decision: Decision,
    *,
    name: str,
    reverted: str,
    digest: str,
    previous: str | None,
    report: str | None,
    at: str,
    report_id: str | None = None,
    why: str | None = None,
) -> RevertPlan:
    """The path-scoped revert of ``reverted`` for model ``name`` (``at``: ISO time of the entry).

    ``previous`` is the version whose content returns (for the message); the content itself is
    that of ``reverted``'s parent. ``why`` replaces the subject's reason (a failed rollout).
    """
    if decision.verdict is not Verdict.REVERT:
        raise ValueError(f"a {decision.verdict.value} decision does not revert anything")
    ev = decision.evidence
    short = reverted[:12]
    back_to = f" to {previous[:12]}" if previous else ""
    subject = f"Revert {name}{back_to}: {why or f'live data drifted from {short}'}"
    numbers = (
        f"rows={ev.rows} share={ev.share:.2f} "
        f"prediction={ev.prediction_method or '-'}:{fmt_number(ev.prediction_score)} "
        f"fitCurrent={fmt_number(ev.fit_current)} "
        f"fitPrevious={fmt_number(ev.fit_previous)} "
        f"windows={decision.streak}/{decision.needed}"
    )
    body = "\n".join(
        [
            subject,
            "",
            f"The mlgitops drift monitor returned {layout.model_path(name)}/ and "
            f"{layout.manifest_path(name)} to their content before {reverted}.",
            f"Evidence: {decision.reason}.",
            f"Numbers: {numbers}.",
            *([f"Report: {report}"] if report else []),
            f"Digest {digest} is now listed in {layout.QUARANTINE}:",
            "the controller will not deploy it again until a person removes its entry",
            "(review the report first).",
        ]
    )
    trailers = {
        layout.TRAILER_MODEL: name,
        layout.TRAILER_REVERTS: reverted,
        layout.TRAILER_DIGEST: digest,
        **({layout.TRAILER_REPORT: report} if report else {}),
        **({layout.TRAILER_REPORT_ID: report_id} if report_id else {}),
        layout.TRAILER_ACTION: "revert",
    }
    entry = quarantine.Entry(
        model=name,
        digest=digest,
        commit=reverted,
        reason=decision.reason[:300],
        at=at,
    )
    return RevertPlan(
        name=name,
        reverted=reverted,
        restore_from=f"{reverted}^",
        previous=previous,
        paths=layout.model_paths(name),
        entry=entry,
        message=body,
        trailers=trailers,
    )
