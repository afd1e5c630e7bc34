"""The ``handoffs`` store in memory: detractor hand-offs per channel."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.detractors import DONE, Channel, DetractorFollowUp, HandoffResult
from integrations.ledger.memory.moments import InMemoryMomentsStore
from integrations.ledger.memory.sources import InMemorySourcesStore


class InMemoryHandoffsStore:
    """Hand-offs of the moments fake's follow-ups, as
    :class:`~integrations.ledger.handoffs.SqlHandoffsStore` (names from the sources fake).

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
        rows: per follow-up key, its hand-off (``<channel>_status``, ``_ref``, ``_error``,
            ``_at``).
    """

    def __init__(self, sources: InMemorySourcesStore, moments: InMemoryMomentsStore) -> None:
        self.sources = sources
        self.moments = moments
        self.calls: list[tuple[Any, ...]] = []
        self.rows: dict[str, dict[str, Any]] = {}

    def detractors_not_handed_on(self) -> int:
        self.calls.append(("detractors_not_handed_on",))
        return sum(1 for key in self.moments.follow_ups if key not in self.rows)

    def open_handoffs(self, now: datetime, with_crm: bool) -> int:
        self.calls.append(("open_handoffs", now, with_crm))
        opened = 0
        for key in self.moments.follow_ups:
            if key not in self.rows:
                self.rows[key] = {"created_at": now, "email_status": "queued"} | {
                    f"{c}_{f}": None for c in ("email", "crm") for f in ("ref", "error", "at")
                }
                self.rows[key]["crm_status"] = "queued" if with_crm else None
                opened += 1
        return opened

    def handoffs_to_send(self, channel: Channel, after: str, limit: int) -> list[DetractorFollowUp]:
        self.calls.append(("handoffs_to_send", channel, after, limit))
        keys = sorted(
            k for k, row in self.rows.items() if row[f"{channel}_status"] == "queued" and k > after
        )[:limit]
        return [self._follow_up(k) for k in keys]

    def queued_handoffs(self, channel: Channel) -> int:
        self.calls.append(("queued_handoffs", channel))
        return sum(1 for row in self.rows.values() if row[f"{channel}_status"] == "queued")

    def claim_handoffs(self, channel: Channel, keys: Sequence[str], now: datetime) -> list[str]:
        self.calls.append(("claim_handoffs", channel, keys, now))
        claimed: list[str] = []
        for key in keys:
            row = self.rows.get(key)
            if row is not None and row[f"{channel}_status"] == "queued":
                row[f"{channel}_status"], row[f"{channel}_at"] = "sending", now
                claimed.append(key)
        return claimed

    def expire_handoff_claims(self, channel: Channel, claimed_before: datetime) -> int:
        self.calls.append(("expire_handoff_claims", channel, claimed_before))
        expired = 0
        for row in self.rows.values():
            if row[f"{channel}_status"] == "sending" and row[f"{channel}_at"] < claimed_before:
                row[f"{channel}_status"] = "unknown"
                expired += 1
        return expired

    def record_handoff_results(
        self, channel: Channel, results: Sequence[HandoffResult], now: datetime
    ) -> None:
        self.calls.append(("record_handoff_results", channel, results, now))
        allowed = {DONE[channel], "failed", "queued", "unknown"}
        if wrong := {r.status for r in results} - allowed:
            raise ValueError(f"not a {channel} hand-off result: {sorted(wrong)}")
        for r in results:
            row = self.rows.get(r.source_event)
            if row is None or row[f"{channel}_status"] != "sending":
                continue
            row[f"{channel}_status"] = r.status
            row[f"{channel}_ref"] = r.ref[:128] if r.ref else None
            row[f"{channel}_error"] = r.error[:512] if r.error else None
            row[f"{channel}_at"] = now if r.status == DONE[channel] else None

    def handoff_counts(self) -> dict[str, dict[str, int]]:
        self.calls.append(("handoff_counts",))
        return {
            channel: dict(
                Counter(
                    row[f"{channel}_status"]
                    for row in self.rows.values()
                    if row[f"{channel}_status"] is not None
                )
            )
            for channel in ("email", "crm")
        }

    def _follow_up(self, key: str) -> DetractorFollowUp:
        event = self.moments.follow_ups[key]
        contact = self.sources.contacts.get(event.contact_id or "")
        account = self.sources.accounts.get(event.account_id or "")
        return DetractorFollowUp(
            source_event=key,
            contact_id=event.contact_id,
            contact_name=contact.name if contact else None,
            account_id=event.account_id,
            account_name=account.name if account else None,
            score=event.score if event.score is not None else 0,
            occurred_at=event.occurred_at,
        )
