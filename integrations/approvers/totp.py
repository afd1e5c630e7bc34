"""One-time codes for approvers: RFC 6238 TOTP (pyotp), secrets encrypted at rest.

Each approver enrols a random base32 secret, shown once as an ``otpauth://`` URI and a
QR code for an authenticator app, and stored only encrypted (Fernet, AES-128-CBC with
HMAC-SHA256) under the key from settings. A code is accepted for the current 30-second
step or one step either side (clock drift), once: the step is recorded as spent, and
no step at or before the last one spent is accepted again (RFC 6238, section 5.2).
"""

from __future__ import annotations

import hmac
import io
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from domain.approvers import CODE, CodeCheck
from domain.errors import ConfigError
from integrations.ledger.approvers import SqlApprovers

ISSUER = "Referral program"
STEP_SECONDS = 30
DRIFT_STEPS = 1


@dataclass(frozen=True)
class Enrolment:
    """What the approver is shown once: the URI, and its QR code as PNG and as text."""

    approver_id: str
    uri: str
    png: bytes
    terminal: str


class TotpCodes:
    """Enrols approvers and verifies their codes.

    Args:
        store: the approvers' store in the ledger.
        key: the Fernet key (urlsafe base64 of 32 bytes) the secrets are encrypted with.
    """

    def __init__(self, store: SqlApprovers, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError(
                "REFERRALS_APPROVER_SECRET_KEY is not a Fernet key (urlsafe base64 of 32 "
                "bytes; make one with `referrals approvers new-key`)"
            ) from None
        self.store = store

    def enrol(self, approver_id: str, actor: str, now: datetime) -> Enrolment:
        """A fresh secret for the approver (any earlier one stops working)."""
        approver = self.store.get(approver_id)
        if approver is None:
            raise LookupError(f"no approver has the id {approver_id!r}")
        secret = pyotp.random_base32()
        self.store.enrol(approver_id, self._fernet.encrypt(secret.encode()).decode(), actor, now)
        uri = pyotp.TOTP(secret).provisioning_uri(name=approver_id, issuer_name=ISSUER)
        qr = segno.make(uri, error="m")
        png = io.BytesIO()
        qr.save(png, kind="png", scale=6)
        text = io.StringIO()
        qr.terminal(out=text, compact=True)
        return Enrolment(approver_id, uri, png.getvalue(), text.getvalue())

    def verify(self, approver_id: str, code: str, now: datetime) -> CodeCheck:
        """Check a code and, if it is good, spend it.

        Returns:
            OK (spent now), WRONG, REPLAYED (a good code already spent, or older than
            the last spent one), or NOT_ENROLLED.
        """
        return self._check(approver_id, code, now, spend=True)

    def check(self, approver_id: str, code: str, now: datetime) -> CodeCheck:
        """As :meth:`verify`, without spending the code."""
        return self._check(approver_id, code, now, spend=False)

    def _check(self, approver_id: str, code: str, now: datetime, *, spend: bool) -> CodeCheck:
        totp = self._totp(approver_id)
        if totp is None:
            return CodeCheck.NOT_ENROLLED
        code = code.strip()
        if not CODE.fullmatch(code):
            return CodeCheck.WRONG
        current = int(now.timestamp()) // STEP_SECONDS
        matched = [
            step
            for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1)
            if hmac.compare_digest(totp.at(step * STEP_SECONDS), code)
        ]
        if not matched:
            return CodeCheck.WRONG
        step = matched[-1]
        last = self.store.last_step(approver_id)
        if last is not None and step <= last:
            return CodeCheck.REPLAYED
        if not spend or self.store.spend(approver_id, step, now):
            return CodeCheck.OK
        return CodeCheck.REPLAYED

    def demo_code(self, approver_id: str, now: datetime) -> str:
        """The current code of a *demo* approver (the demo's newcomers have no phone).

        Raises:
            PermissionError: the approver is not a demo one: a real approver's code
                comes from their authenticator app only.
        """
        approver = self.store.get(approver_id)
        if approver is None or not approver.demo:
            raise PermissionError(
                f"{approver_id!r} is not a demo approver: its codes come from its "
                "authenticator app only"
            )
        totp = self._totp(approver_id)
        if totp is None:
            raise LookupError(f"approver {approver_id!r} has no secret enrolled")
        return totp.at(now)

    def _totp(self, approver_id: str) -> pyotp.TOTP | None:
        encrypted = self.store.secret(approver_id)
        if encrypted is None:
            return None
        try:
            secret = self._fernet.decrypt(encrypted.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "an approver's secret does not decrypt with REFERRALS_APPROVER_SECRET_KEY "
                "(was the key changed? re-enrol the approvers)"
            ) from None
        return pyotp.TOTP(secret, interval=STEP_SECONDS)


def new_key() -> str:
    """A fresh Fernet key for REFERRALS_APPROVER_SECRET_KEY."""
    return Fernet.generate_key().decode()
