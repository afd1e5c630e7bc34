"""Secrets a local install keeps in files of its own: made once, readable by the owner only.

The demo's way (the Prefect server's password, the approvers' key); in production they
come from a secret store through the environment instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


class SecretFileError(RuntimeError):
    """A secret file exists but holds nothing."""


def read_or_make_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path``, made by ``make()`` (owner-only) if there is none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once never write two different secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(make())
    deadline = time.monotonic() + 5
    while not (value := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the process that made it is still writing
    if not value:
        raise SecretFileError(f"{path} is empty: remove it and start again")
    return value
