"""The link visitors' hash key: from settings, or else from a key file made once."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import SecretStr

from integrations.local_secrets import read_or_make_secret


def visitor_key(configured: SecretStr | None, key_file: Path) -> bytes:
    """The key visitor cookies are hashed with (``domain.links.visitor_hash``).

    Args:
        configured: ``REFERRALS_VISITOR_KEY``; wins when set.
        key_file: where the key is kept otherwise; made (owner-only, 64 hex
            characters) the first time it is needed.

    Returns:
        The key's bytes.
    """
    if configured is not None:
        return configured.get_secret_value().encode("utf-8")
    return read_or_make_secret(key_file, lambda: secrets.token_hex(32)).encode("utf-8")


def page_key(configured: SecretStr | None, key_file: Path) -> bytes:
    """The key referrers' magic links and page forms are signed with.

    Args:
        configured: ``REFERRALS_PAGE_KEY``; wins when set.
        key_file: where the key is kept otherwise; made (owner-only, 64 hex
            characters) the first time it is needed.

    Returns:
        The key's bytes.
    """
    return visitor_key(configured, key_file)
