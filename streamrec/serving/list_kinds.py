"""Every kind of list the system serves: where the worker stores it, and how a reader asks for it.

Each :class:`ListKind` names the keys one list of its kind is written to and
the :class:`~streamrec.store.RecsClient` call that serves it. Every call goes
through the one read step (:mod:`streamrec.serving.read_step`); the test suite of
that step (``tests/integration/test_read_step.py``) runs its checks against
every entry of :data:`LIST_KINDS`, so a new kind of list is covered by adding
it here.

Examples
--------
>>> from streamrec.store import KeyLayout
>>> [kind.name for kind in LIST_KINDS]
['user', 'model', 'fallback', 'category', 'similar']
>>> LIST_KINDS[4].keys(KeyLayout("streamrec"), "sku-1")
['streamrec:similar:{46}:sku-1']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.store import BUCKETS, KeyLayout, RecList

__all__ = ["LIST_KINDS", "ListKind", "list_kind"]

#: The model name the per-model kind is written under in the checks.
MODEL = "itemknn"
#: The category the category kind is written under in the checks.
CATEGORY = "cat-under-test"


@dataclass(frozen=True)
class ListKind:
    """One kind of served list.

    ``keys(layout, owner)`` are the keys the worker writes a list of this kind
    to (``owner`` is the user, item or category it belongs to); ``read(client,
    owner, **options)`` serves it, with the read options of
    :meth:`~streamrec.store.RecsClient.read` (``k``, ``exclude``,
    ``categories``, ``per_category``). ``per_user`` says whether a user's
    "not interested" and excluded items apply to it.
    """

    name: str
    keys: Callable[[KeyLayout, str], list[str]]
    read: Callable[..., RecList | None]
    per_user: bool


def _category_keys(layout: KeyLayout, category: str) -> list[str]:
    return [layout.category_key(b, category) for b in range(BUCKETS)]


def _read_user(client: Any, owner: str, **options: Any) -> RecList | None:
    return client.read(owner, with_fallback=False, **options)


def _read_model(client: Any, owner: str, **options: Any) -> RecList | None:
    return client.read(owner, MODEL, with_fallback=False, **options)


def _read_fallback(client: Any, owner: str, **options: Any) -> RecList | None:
    return client.read(owner, **options)  # a user with no list: served the fallback copy of their bucket


def _read_category(client: Any, owner: str, categories: Sequence[str] = (), **options: Any) -> RecList | None:
    return client.read(owner, categories=[CATEGORY], **options)  # the category is the list: always asked for


def _read_similar(client: Any, owner: str, **options: Any) -> RecList | None:
    return client.similar(owner, **options)


LIST_KINDS: tuple[ListKind, ...] = (
    ListKind("user", lambda layout, user: [layout.user_key(user)], _read_user, per_user=True),
    ListKind("model", lambda layout, user: [layout.user_key(user, MODEL)], _read_model, per_user=True),
    ListKind("fallback", lambda layout, _: layout.fallback_keys(), _read_fallback, per_user=True),
    ListKind("category", lambda layout, _: _category_keys(layout, CATEGORY), _read_category, per_user=True),
    ListKind("similar", lambda layout, item: [layout.similar_key(item)], _read_similar, per_user=False),
)


def list_kind(name: str) -> ListKind:
    """The kind called ``name``."""
    for kind in LIST_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"no list kind {name!r}; known: {', '.join(k.name for k in LIST_KINDS)}")
