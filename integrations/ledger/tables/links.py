"""The tracked link's clicks: one row per request for a referrer's link.

Imported by :mod:`integrations.ledger.tables` so the table
joins ``Base.metadata``; revision ``0021`` creates it, with its append-only guards.

``link_clicks`` keeps, per click: the code and its owner, when, the keyed hash of the
visitor's cookie (``domain.links.visitor_hash``) and what kind of visitor it looked
like (a person, a bot or link previewer, a browser prefetch: only a person's click
counts). No IP address and no user agent: the table tells who was clicked, not who
clicked. Rows are written in batches by the link app (``integrations.web``), each
click once by its id; a conversion made with the code then takes the last counted
click before it as a touch (``integrations.ledger.touchpoints``). Never updated, never
deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class LinkClickRow(Base):
    """One request for a referrer's tracked link."""

    __tablename__ = "link_clicks"
    click_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), ForeignKey("referral_codes.code"))
    referrer_id: Mapped[str] = mapped_column(String(128))
    clicked_at: Mapped[datetime]
    # HMAC-SHA256 (hex) of the visitor cookie, under the link app's visitor key.
    visitor_hash: Mapped[str] = mapped_column(String(64), index=True)
    visitor_kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("visitor_kind in ('person', 'bot', 'prefetch')", name="visitor_kind"),
        CheckConstraint("length(visitor_hash) = 64", name="visitor_hash_hex"),
        # A conversion's last click before it, by its code.
        Index("ix_link_clicks_code_clicked_at", "code", "clicked_at"),
        # A referrer's clicks (their page, later).
        Index("ix_link_clicks_referrer_id_clicked_at", "referrer_id", "clicked_at"),
    )


class ReferrerVisitorRow(Base):
    """A visitor (keyed hash of the ``rv`` cookie) seen on a referrer's own page, opened
    with a verified magic link: that browser is the referrer's. A click on their link
    from it is the referrer's own (``integrations.ledger.links.own_click``), decided when
    clicks are read, so a click made before the page was opened stops counting too."""

    __tablename__ = "referrer_visitors"
    referrer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    visitor_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime]
    __table_args__ = (CheckConstraint("length(visitor_hash) = 64", name="visitor_hash_hex"),)


NO_DELETE = ("link_clicks", "referrer_visitors")
NO_UPDATE = ("link_clicks", "referrer_visitors")


# One name per table, for SQLAlchemy Core statements.
T_LINK_CLICKS: Table = LinkClickRow.__table__  # type: ignore[assignment]
T_REFERRER_VISITORS: Table = ReferrerVisitorRow.__table__  # type: ignore[assignment]
