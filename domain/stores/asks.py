"""The ``asks`` store: moments waiting for a decision, what deciding reads, queued asks.

Who is asked is the domain's rule (:func:`domain.eligibility.decide`); this store reads
what the rule needs and keeps what it decided. Recording a batch of decisions is one
unit of work (:func:`tasks.use_cases.asks.record_ask_decisions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from domain.models import Ask, AskDecision, Contact, ContactHistory, Moment, SkipReason
from domain.shards import Shard


class AskStore(Protocol):
    """Moments to decide, contacts and their history, referral codes, queued asks."""

    # -- what deciding reads -----------------------------------------------------------

    def pending_moments(
        self, as_of: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Moment]:
        """Moments not yet decided that happened by ``as_of``, oldest first (by
        ``occurred_at``, then id).

        Args:
            as_of: the decision's time; later moments wait.
            limit: at most this many.
            after: (occurred_at, moment id) of the last moment of the previous page:
                only moments after it in that order (a run that closes some of its
                moments later pages on with it).
        """
        ...

    def contacts(self, contact_ids: Iterable[str]) -> dict[str, Contact]:
        """The contacts of ``contact_ids`` the ledger has, by contact id."""
        ...

    def histories(
        self,
        contact_ids: Iterable[str],
        as_of: datetime,
        blocking_priorities: Sequence[str],
        nps_since: datetime | None = None,
    ) -> dict[str, ContactHistory]:
        """Last ask, suppression, open blocking tickets, tenure and NPS answers, per contact.

        Args:
            contact_ids: the contacts (each gets a history, empty if nothing is known).
            as_of: the decision's time: later tickets and answers have not happened yet.
            blocking_priorities: ticket priorities that block an ask while open.
            nps_since: the oldest NPS answer worth reading
                (``domain.eligibility.nps_answers_since``); None reads every answer up
                to ``as_of``. This only narrows what is read, never what the rule sees.
        """
        ...

    def codes_for(self, contact_ids: Iterable[str]) -> dict[str, str]:
        """The referral code of each of ``contact_ids`` that has one."""
        ...

    def asked_contacts(self, until: datetime) -> list[str]:
        """Contacts asked at or before ``until`` (asks are dated by their decision time)."""
        ...

    def account_domains(self, account_ids: Iterable[str]) -> dict[str, str]:
        """The email domain of each of ``account_ids`` that has one."""
        ...

    # -- what deciding writes (one unit of work: see the module's docstring) ----------

    def add_codes(self, new_codes: Mapping[str, str], now: datetime) -> int:
        """Store new referral codes (contact id -> code); a contact that has a code by
        now keeps it (one code per contact). How many were stored."""
        ...

    def queue_asks(self, asks: Sequence[Ask], as_of: datetime) -> list[str]:
        """Queue asks dated ``as_of``, each once by its id; the ids queued now."""
        ...

    def close_moments(self, decisions: Sequence[AskDecision], now: datetime) -> None:
        """Mark each decided moment still undecided as asked or skipped (with the
        reason); the first decision of a moment counts."""
        ...

    def skip_moments(self, skipped: Mapping[SkipReason, Sequence[str]], now: datetime) -> None:
        """Mark the moments of ``skipped`` (reason -> moment ids) still undecided as
        skipped with that reason: decided moments held by id only, closed many at once
        (one statement rewrites each page of the moments once)."""
        ...

    # -- sending -----------------------------------------------------------------------

    def asks_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[Ask, Contact, str]]:
        """Queued asks with their contact and the moment's detail, by id after ``after``.

        Args:
            after: the last ask id of the previous page ("" for the first).
            limit: at most this many.
            shard: only the asks of the contacts in this shard (issue 17); None, all.
        """
        ...


class AskStores(Protocol):
    """The stores recording ask decisions uses (read-only: any ``Stores`` is one)."""

    @property
    def asks(self) -> AskStore: ...


class LedgerWithAsks(Protocol):
    """What the ask use case needs of the ledger: a unit of work with its stores.

    Narrower than :class:`domain.stores.Ledger`, so the in-memory ledger, which fakes
    only some areas, is one too.
    """

    def transaction(self) -> AbstractContextManager[AskStores]:
        """Open one transaction; the stores it yields all run in it."""
        ...
