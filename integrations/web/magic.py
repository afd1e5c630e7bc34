"""Magic links to a referrer's own page, and the CSRF tokens of its forms.

A magic link is ``<public_base_url>/p/<token>``: the token names the referrer and is
signed with the page key and timestamped (itsdangerous' ``URLSafeTimedSerializer``),
so it cannot be forged, altered to name someone else, or used after it expired. It is
a bearer credential: it is put in email bodies only, never in logs, provider metadata
or run names.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadData, URLSafeTimedSerializer

PAGE_PATH = "/p/"
# A token this module mints is about 60 characters; anything much longer is refused
# before the signature is checked (no work spent on a flood of huge paths).
MAX_TOKEN_CHARS = 400
_SALT = "referrals.referrer-page.v1"
_CSRF_SALT = b"referrals.referrer-page.csrf.v1"


class MagicLinks:
    """Signs and checks the tokens of referrers' page links.

    Args:
        key: the page key (``REFERRALS_PAGE_KEY`` or its key file).
        max_age_seconds: how long a token works after it was made.
    """

    def __init__(self, key: bytes | str, max_age_seconds: int) -> None:
        self._key = key.encode("utf-8") if isinstance(key, str) else key
        self._max_age = max_age_seconds
        self._serializer = URLSafeTimedSerializer(self._key, salt=_SALT)

    def token_for(self, referrer_id: str) -> str:
        """A fresh token for ``referrer_id``'s page."""
        token = self._serializer.dumps(referrer_id)
        return token if isinstance(token, str) else token.decode("ascii")

    def referrer_of(self, token: str) -> str | None:
        """The referrer a token was made for; ``None`` when it is tampered with,
        expired, malformed or oversized (the caller answers all of them alike)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            value = self._serializer.loads(token, max_age=self._max_age)
        except BadData:
            return None
        return value if isinstance(value, str) and value else None

    def csrf_for(self, token: str, referrer_id: str) -> str:
        """The CSRF token of forms on the page opened with ``token``: an HMAC of the
        page token and the referrer, so it is only valid with both (session-bound: a
        form from another referrer's page, or from an older link, is refused)."""
        message = f"{referrer_id}\x00{token}".encode()
        return hmac.new(self._key + _CSRF_SALT, message, hashlib.sha256).hexdigest()

    def csrf_ok(self, token: str, referrer_id: str, given: str | None) -> bool:
        """Whether ``given`` is the CSRF token of (``token``, ``referrer_id``)."""
        if not given or len(given) != 64:
            return False
        return secrets.compare_digest(self.csrf_for(token, referrer_id), given)


class PageLinks:
    """The magic link of each referrer's page, as emails carry it.

    Args:
        magic: signs the tokens.
        base_url: where the web app is reached (``REFERRALS_PUBLIC_BASE_URL``).
    """

    def __init__(self, magic: MagicLinks, base_url: str) -> None:
        self._magic = magic
        self._base = base_url.rstrip("/")

    def __call__(self, referrer_id: str) -> str:
        return f"{self._base}{PAGE_PATH}{self._magic.token_for(referrer_id)}"

    def __repr__(self) -> str:
        # Never the key; the base only (this object is passed to tasks, whose
        # parameters Prefect may show).
        return f"PageLinks({self._base!r})"
