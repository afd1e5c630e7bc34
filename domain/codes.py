"""Referral codes: unguessable, URL-safe, one per referrer."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable

CODE_BYTES = 12  # 96 bits of randomness: above the 80 the program requires
CODE_PREFIX = "R"
_CODE_RE = re.compile(r"^R[A-Z2-7]{20}$")


def new_referral_code(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A new code such as ``RKX4...`` (base32: no look-alike 0/O, 1/l, case-insensitive).

    Base32 of 12 bytes is 20 characters with no padding; the ``R`` prefix makes codes
    recognisable in CRM free-text fields.
    """
    raw = random_bytes(CODE_BYTES)
    if len(raw) != CODE_BYTES:
        raise ValueError(f"need {CODE_BYTES} random bytes, got {len(raw)}")
    return CODE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")


def normalize_code(text: str) -> str | None:
    """The canonical form of a code typed or pasted by a person, or ``None`` if it is
    not a well-formed code (so it can be quarantined with that reason)."""
    candidate = re.sub(r"[\s-]", "", text).upper()
    return candidate if _CODE_RE.match(candidate) else None


def referral_link(base: str, code: str) -> str:
    """The referrer's link: ``base`` + code, as a path segment or a query value."""
    if base.endswith("="):
        return base + code
    return f"{base.rstrip('/')}/{code}"
