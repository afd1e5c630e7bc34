"""Reading the stored history back, for replays that change nothing (what-if)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from domain.models import Conversion
from integrations.ledger.base import LedgerBase, conversion_from_row
from integrations.ledger.tables import (
    T_CONVERSIONS,
    ConversionRow,
)


class SqlHistoryStore(LedgerBase):
    """The ``history`` store: every conversion ever recorded, oldest first, in pages."""

    def conversion_history(self, page_size: int = 5000) -> Iterator[list[Conversion]]:
        """Every stored conversion, by id, ``page_size`` at a time.

        Unbound, each page is read on a connection of its own, so a long replay holds
        no transaction open between pages.
        """
        after = ""
        while True:
            with self._connect() as conn:
                rows = (
                    conn.execute(
                        select(T_CONVERSIONS)
                        .where(ConversionRow.conversion_id > after)
                        .order_by(ConversionRow.conversion_id)
                        .limit(page_size)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                return
            yield [conversion_from_row(r) for r in rows]
            after = rows[-1]["conversion_id"]
