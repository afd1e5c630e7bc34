"""The ``links`` store in memory: codes with their owners, and clicks kept once each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.links import LinkClick


class InMemoryLinkStore:
    """A recording fake of :class:`domain.stores.links.LinkStore`.

    Attributes:
        owners: referral code -> its owner's contact id (set by the test).
        opted_out: contact ids whose links are revoked (set by the test).
        clicks: stored clicks by click id.
        calls: (method, arguments) of every call, in order.
    """

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.opted_out: set[str] = set()
        self.clicks: dict[str, LinkClick] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def live_referrer(self, code: str) -> str | None:
        self.calls.append(("live_referrer", (code,)))
        owner = self.owners.get(code)
        return None if owner is None or owner in self.opted_out else owner

    def record_link_clicks(self, clicks: Sequence[LinkClick], now: datetime) -> int:
        self.calls.append(("record_link_clicks", (list(clicks), now)))
        new = [c for c in clicks if c.click_id not in self.clicks]
        for click in new:
            self.clicks[click.click_id] = click
        return len({c.click_id for c in new})
