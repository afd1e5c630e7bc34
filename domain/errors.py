"""The exception hierarchy of the referral program.

::

    ReferralError                   base of everything raised on purpose here
    ├── DomainError                 a business rule refuses the operation
    │   ├── InvalidAmount           not a valid amount of money for its currency
    │   ├── CurrencyMismatch        two currencies combined in one operation
    │   ├── InvalidTransition       a reward/payout moved to a state it cannot reach
    │   └── InvalidDecision         an approval decision that breaks a rule
    │       └── DecisionConflict    another decision on the same stage came first
    ├── InputRejected               one input record is malformed (it is quarantined)
    ├── ConfigError                 settings or program rules are invalid (at start)
    └── IntegrationError            an outside system failed
        ├── RetryableIntegrationError   worth retrying (timeouts, 429, 5xx, 409)
        └── PermanentIntegrationError   never retried (invalid request, auth, idempotency)

Integrations translate their library's exceptions into the last two, so flows and
tasks never import a provider SDK to decide whether to retry.
"""

from __future__ import annotations


class ReferralError(Exception):
    """Base class of every error this project raises on purpose."""


class DomainError(ReferralError):
    """A business rule refuses the operation."""


class InvalidAmount(DomainError, ValueError):
    """A value is not a valid amount of money in its currency."""


class CurrencyMismatch(DomainError, ValueError):
    """Two amounts in different currencies were combined."""


class InvalidTransition(DomainError):
    """A reward or payout was asked to move to a state it cannot reach from its own."""


class InvalidDecision(DomainError, ValueError):
    """An approval decision breaks a rule (e.g. an amount above the reward)."""


class DecisionConflict(InvalidDecision):
    """Another decision on the same approval stage was recorded first."""


class InputRejected(ReferralError, ValueError):
    """One input record is malformed; it names the record and the field.

    Attributes:
        record: where the record came from, e.g. ``"crm_events.csv:17"`` or an event id.
        field: the offending field, or ``None`` when the whole record is wrong.
        reason: why it was refused, in words an operator can act on.
    """

    def __init__(self, record: str, field: str | None, reason: str) -> None:
        self.record = record
        self.field = field
        self.reason = reason
        where = f"{record}: {field}" if field else record
        super().__init__(f"{where}: {reason}")


class ConfigError(ReferralError):
    """Settings or the program rules file are invalid; raised at start."""


class IntegrationError(ReferralError):
    """An outside system (CRM, email, payments, ledger database) failed."""


class RetryableIntegrationError(IntegrationError):
    """A failure that may succeed when tried again (timeout, 429, 5xx, 409)."""

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PermanentIntegrationError(IntegrationError):
    """A failure that will not change by retrying (invalid request, auth, idempotency)."""
