"""Reading the stored history back, for replays that change nothing (what-if)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from domain.models import Conversion
from integrations.ledger.base import LedgerBase, conversion_from_row
from integrations.ledger.tables import ConversionRow


class HistoryLedger(LedgerBase):
    """Every conversion ever recorded, oldest first, in pages."""

    def conversion_history(self, page_size: int = 5000) -> Iterator[list[Conversion]]:
        after = ""
        while True:
            with self._connect() as conn:
                rows = (
                    conn.execute(
                        select(ConversionRow.__table__)
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
