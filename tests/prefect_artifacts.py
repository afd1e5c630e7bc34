"""Reading artifacts back from the test server, every one of them.

The server answers an unfiltered read with one page (200) sorted by id, and ids are
random: once the session's server holds more artifacts than a page, an unfiltered
read misses some at random. These read by key, page after page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

PAGE = 200


def keyed_artifacts(*keys: str) -> list[Any]:
    """Every artifact with one of ``keys`` (with none: every keyed artifact)."""
    key_filter = ArtifactFilterKey(any_=list(keys)) if keys else ArtifactFilterKey(exists_=True)
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=key_filter), limit=PAGE, offset=len(found)
            )
            found += page
            if len(page) < PAGE:
                return found


def artifact_texts(key: str) -> list[str]:
    """The data of every artifact under ``key``, as text."""
    return [str(a.data) for a in keyed_artifacts(key)]


def latest_artifact_text(key: str) -> str:
    """The data of the newest artifact under ``key``."""
    found = keyed_artifacts(key)
    assert found, f"no {key} artifact"
    newest = max(found, key=lambda a: a.created or datetime.min.replace(tzinfo=UTC))
    return str(newest.data)
