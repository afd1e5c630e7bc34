"""The referrer's own clicks on their link (SQLite, and PostgreSQL when configured): a
browser seen on the referrer's page is theirs; its clicks are stored but neither
counted nor taken as a touch, even those made before the page was opened; and a
conversion reached only through them gets its reward flagged for a person."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain.fraud import SELF_REFERRAL_CLICK, FirstClicks
from domain.links import LinkClick, VisitorKind
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from tasks.rewards import compute_new_rewards, plan_routes
from tests.conftest import contact
from tests.integration.test_fraud_history import flags_by_conversion, given_people, referral

OWN, STRANGER, OTHER_OWN = "a" * 64, "b" * 64, "c" * 64


def clicks(ledger: SqlLedger, code: str, owner: str, *made: tuple[str, datetime]) -> None:
    """A person's clicks on ``code``'s link, each (visitor hash, when)."""
    ledger.links.record_link_clicks(
        [
            LinkClick(f"{code}-{i}", code, owner, at, visitor, VisitorKind.PERSON)
            for i, (visitor, at) in enumerate(made)
        ],
        made[0][1],
    )


def test_a_visitor_seen_on_a_referrers_page_is_kept_once_and_never_changed_or_removed(
    ledger: SqlLedger, now: datetime
) -> None:
    side = ledger.referrer_side

    assert side.record_referrer_visitor("R1", OWN, now) is True
    assert side.record_referrer_visitor("R1", OWN, now + timedelta(days=1)) is False
    assert side.record_referrer_visitor("R2", OWN, now) is True  # a shared computer

    for statement in (
        "UPDATE referrer_visitors SET referrer_id = 'R3'",
        "DELETE FROM referrer_visitors",
    ):
        with (
            pytest.raises(DBAPIError, match=r"append-only|refuse"),
            ledger.engine.begin() as conn,
        ):
            conn.execute(text(statement))
    with ledger.engine.connect() as conn:
        kept = conn.execute(
            text("SELECT referrer_id FROM referrer_visitors ORDER BY referrer_id")
        ).scalars()
        assert list(kept) == ["R1", "R2"]


def test_the_referrers_own_clicks_stop_counting_once_their_browser_is_seen_on_their_page(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    codes = given_people(ledger, now, contact("R1", "ACC-R1"))
    clicks(ledger, codes["R1"], "R1", (OWN, now - timedelta(days=2)), (STRANGER, now))
    assert ledger.referrer_side.referrer_facts("R1").clicks == 2  # type: ignore[union-attr]

    # The referrer opens their page afterwards, in the browser of the first click.
    ledger.referrer_side.record_referrer_visitor("R1", OWN, now)

    assert ledger.referrer_side.referrer_facts("R1").clicks == 1  # type: ignore[union-attr]
    won = referral("won", codes["R1"], "R1", now, referee_account="ACC-N1")
    referrers = ledger.asks.contacts(["R1"])
    history = ledger.fraud.fraud_history([won], referrers, program.fraud)
    assert history.link_clicks == {
        codes["R1"]: FirstClicks(own=now - timedelta(days=2), others=now)
    }


def test_a_conversion_reached_only_through_the_referrers_own_clicks_waits_for_a_person(
    ledger: SqlLedger, now: datetime, program: Program
) -> None:
    codes = given_people(ledger, now, contact("R1", "ACC-R1"), contact("R2", "ACC-R2"))
    day = timedelta(days=1)
    ledger.referrer_side.record_referrer_visitor("R1", OWN, now - 3 * day)
    ledger.referrer_side.record_referrer_visitor("R2", OTHER_OWN, now - 3 * day)
    clicks(ledger, codes["R1"], "R1", (OWN, now - 2 * day))
    # R2 tried their link too, but a friend's click came before the conversion.
    clicks(ledger, codes["R2"], "R2", (OTHER_OWN, now - 2 * day), (STRANGER, now - day))
    selfish = referral("selfish", codes["R1"], "R1", now, referee_account="ACC-N1")
    honest = referral("honest", codes["R2"], "R2", now, referee_account="ACC-N2")
    ledger.conversions.record_conversions([], [selfish, honest], [], now)

    compute_new_rewards.fn(ledger, program, now)

    flags = flags_by_conversion(ledger, now)
    assert flags[selfish.conversion_id] == (SELF_REFERRAL_CLICK,)
    assert flags[honest.conversion_id] == ()
    # The own click was no touch: only the code touches R1's referee; R2's has the friend's.
    touches = ledger.touchpoints.touchpoints_for([selfish, honest])
    assert [t.kind.value for t in touches[selfish.conversion_id]] == ["code"]
    assert [t.ref for t in touches[honest.conversion_id] if t.kind.value == "ask_click"] == [
        f"link:{codes['R2']}-1"
    ]
    later = now + timedelta(days=365)  # past any holding period
    reward_of = {
        v.reward.conversion_id: v.reward.reward_id for v in ledger.rewards.to_route(later, "", 1000)
    }
    plan = plan_routes.fn(ledger, program, later, now)
    assert reward_of[selfish.conversion_id] in plan.approval
