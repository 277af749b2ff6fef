"""Outgoing webhooks: a decision as JSON (or a Slack message), signed, over HTTP with httpx.

``POST <url>`` with ``Content-Type: application/json`` and, when a secret is set,
``X-Mlgitops-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the secret, as
GitHub signs its webhooks (and as the gateway checks ``X-Hub-Signature-256``). A receiver
verifies it with `verify`. ``X-Mlgitops-Event`` names the decision kind and
``X-Mlgitops-Delivery`` its id (the same id on every retry, so a receiver can drop duplicates).

Formats: ``json`` (`payload`: model, kind, commits, verdict, report URL, per-feature numbers) or
``slack`` (`slack_payload`: ``{"text": …, "blocks": […]}``, what Slack's incoming webhooks and
compatible chat tools accept).

`Notifier.record` raises `errors.NotifyError` when the receiver cannot be reached or answers
other than 2xx; the controller's dispatcher retries with back-off, off the loop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from mlgitops import errors
from mlgitops.core import decisions

Format = Literal["json", "slack"]
FORMATS: tuple[Format, ...] = ("json", "slack")
SIGNATURE_HEADER = "X-Mlgitops-Signature"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``body`` with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` with ``secret``."""
    return hmac.compare_digest(sign(secret, body), signature)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def payload(d: decisions.Decision) -> dict[str, Any]:
    """The JSON document of one decision."""
    return {
        "event": d.kind.value,
        "id": d.id,
        "model": d.model,
        "time": decisions.iso(d.at),
        "version": d.version,
        "previousVersion": d.previous_version,
        "commit": d.commit,
        "digest": d.digest,
        "verdict": d.verdict,
        "whyNotReverted": d.why_not_reverted,
        "outcome": d.outcome,
        "reportUrl": d.report_url,
        "share": d.share,
        "driftedFeatures": list(d.drifted_features),
        "features": [f.to_dict() for f in d.features],
    }


_HEADLINES = {
    decisions.Kind.REVERT: ":rewind: *{model}*: reverted `{version}`, back to `{previous}`",
    decisions.Kind.ALERT: ":warning: *{model}*: drift alert on `{version}` (no revert)",
    decisions.Kind.DEPLOY: ":rocket: *{model}*: `{version}` deployed",
    decisions.Kind.HOLD: ":no_entry: *{model}*: `{version}` held, `{previous}` serves on",
    decisions.Kind.PASS: "*{model}*: drift window on `{version}`",
    decisions.Kind.BREACH: "*{model}*: drift breach on `{version}` (no action yet)",
    decisions.Kind.STEP: ":arrow_forward: *{model}*: rollout of `{version}` beside `{previous}`",
}


def slack_payload(d: decisions.Decision) -> dict[str, Any]:
    """A Slack-compatible message (``text`` for notifications, ``blocks`` for the layout)."""
    headline = _HEADLINES[d.kind].format(model=d.model, version=_short(d.version),
                                         previous=_short(d.previous_version))
    text = f"{headline}: {d.verdict}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {"type": "section", "text": {"type": "mrkdwn", "text": d.verdict[:2900]}},
    ]
    if d.why_not_reverted:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"Why no revert: {d.why_not_reverted[:2900]}"}]})
    drifted = ", ".join(d.drifted_features)
    facts = [f"*Commit:* `{_short(d.commit)}`" if d.commit else None,
             f"*Drifted:* {drifted}" if drifted else None,
             f"*Share:* {d.share:.0%}" if d.share is not None else None]
    fields = [{"type": "mrkdwn", "text": f} for f in facts if f]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if d.report_url and d.report_url.startswith(("http://", "https://")):
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open the decision"},
             "url": d.report_url}]})
        text += f" <{d.report_url}|report>"
    return {"text": text, "blocks": blocks}


@dataclass(frozen=True)
class Target:
    url: str
    secret: str | None = None
    format: Format = "json"
    timeout_seconds: float = 5.0
    kinds: frozenset[decisions.Kind] = frozenset(
        {decisions.Kind.DEPLOY, decisions.Kind.HOLD, decisions.Kind.ALERT, decisions.Kind.REVERT,
         decisions.Kind.STEP})
    """Which decisions are sent (quiet windows are not, unless asked for)."""


def body_of(target: Target, d: decisions.Decision) -> bytes:
    doc: Mapping[str, Any] = slack_payload(d) if target.format == "slack" else payload(d)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


class Notifier:
    """`decisions.Sink` posting decisions to one webhook URL."""

    def __init__(self, target: Target, *, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        self._client = httpx.Client(timeout=httpx.Timeout(target.timeout_seconds),
                                    transport=transport, follow_redirects=False)

    def record(self, decision: decisions.Decision) -> None:
        if decision.kind not in self.target.kinds:
            return
        body = body_of(self.target, decision)
        headers = {"Content-Type": "application/json", "User-Agent": "mlgitops-webhook",
                   "X-Mlgitops-Event": decision.kind.value, "X-Mlgitops-Delivery": decision.id}
        if self.target.secret:
            headers[SIGNATURE_HEADER] = sign(self.target.secret, body)
        try:
            response = self._client.post(self.target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise errors.NotifyError(
                f"the webhook {self.target.url} could not be reached ({type(exc).__name__}: "
                f"{exc}); check MLGITOPS_NOTIFY_URL"
            ) from exc
        if not 200 <= response.status_code < 300:
            raise errors.NotifyError(
                f"the webhook {self.target.url} answered {response.status_code} "
                f"({response.text[:200]!r}) to {decision.id}"
            )

    def close(self) -> None:
        self._client.close()
