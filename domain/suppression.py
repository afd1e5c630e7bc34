"""Which email events stop us emailing a contact ever again, and with what reason.

A hard bounce, an unsubscribe (from everything or from a group) and a spam report
suppress the contact; so does SendGrid dropping mail to an address it will never
deliver to. A "blocked" bounce does not: the address may recover from a refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from domain.models import EmailEvent, EmailEventType

# Events after which we never email the contact again. A bounce only when hard: a
# "blocked" bounce is a refusal the address may recover from.
_SUPPRESSING = frozenset(
    {
        EmailEventType.BOUNCE,
        EmailEventType.UNSUBSCRIBE,
        EmailEventType.GROUP_UNSUBSCRIBE,
        EmailEventType.SPAMREPORT,
    }
)
# Reasons SendGrid gives for dropping mail to an address it will never deliver to.
# ("Invalid" alone is an invalid address; "Invalid SMTPAPI header" is our mistake.)
_FINAL_DROPS = ("bounced address", "unsubscribed address", "spam reporting address")


def suppression_reason(event: EmailEvent) -> str | None:
    """The suppression an event calls for (the event type), or None.

    Only a hard bounce suppresses: the parser words it ``"bounce"`` or
    ``"bounce: <detail>"``, while a block reads ``"blocked: ..."``.
    """
    if event.type is EmailEventType.DROPPED:
        # SendGrid drops mail to addresses on its own bounce, unsubscribe and spam
        # lists, or invalid ones: those are as final as the events that put them there.
        # Other drops (a bad header, content) are ours to fix, not the contact's.
        reason = (event.reason or "").strip().lower()
        if reason == "invalid" or any(marker in reason for marker in _FINAL_DROPS):
            return f"dropped: {reason}"[:64]
        return None
    if event.type not in _SUPPRESSING:
        return None
    if event.type is EmailEventType.BOUNCE:
        reason = event.reason or ""
        if not (reason == "bounce" or reason.startswith("bounce:")):
            return None
    return event.type.value


def suppressions(events: Iterable[EmailEvent], contacts: Mapping[str, str]) -> dict[str, str]:
    """Contact id -> suppression reason, for the events that call for one.

    The earliest suppressing event of a contact gives the reason (ties by event id).

    Args:
        events: new events, in any order.
        contacts: message id -> contact id; events of other message ids suppress nobody.
    """
    reasons: dict[str, str] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        reason = suppression_reason(event)
        contact_id = contacts.get(event.message_id)
        if reason is not None and contact_id is not None:
            reasons.setdefault(contact_id, reason)
    return reasons
