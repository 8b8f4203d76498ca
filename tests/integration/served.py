"""What the integration tests read back: each user's seen items, and the lists Redis serves them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streamrec.settings import Settings
from streamrec.store import RecList, RecsClient


def seen_by_user(events: Iterable[Any]) -> dict[str, set[str]]:
    """Each user's items among ``events`` (interactions or ratings)."""
    seen: dict[str, set[str]] = {}
    for e in events:
        seen.setdefault(e.user_id, set()).add(e.item_id)
    return seen


def served_lists(settings: Settings, users: Iterable[str]) -> dict[str, RecList | None]:
    """The lists the read step serves ``users`` now (``None``: no list of their own)."""
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        return client.get_many(sorted(users))
    finally:
        client.close()
