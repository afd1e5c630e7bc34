"""The link visitors' hash key: from settings, or else from a key file made once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr


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
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once never write two different keys.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return key_file.read_text().strip().encode("utf-8")
