"""A/B experiments: users split between variants by a salted hash, and team-draft interleaving.

An experiment is one setting, ``STREAMREC_EXPERIMENT``::

    name: variant=model weight, variant=model weight, ...

A variant serves one model's list (``control=sasrec 50``) or a team-draft
interleaving of two models' lists (``mix=sasrec/itemknn 20``). Weights are
relative (they need not add up to 100).

**Assignment** (any language computes the same): ``h`` is the SHA-256 digest of
the UTF-8 bytes of ``name + ":" + user_id``; ``u`` is its first 8 bytes read as
a big-endian unsigned integer, divided by ``2**64`` (so ``0 <= u < 1``); the
user's variant is the first, in the order written, whose cumulative weight
share exceeds ``u``. The name is the salt: a new name reshuffles the users;
the same name keeps every user in their variant across restarts and workers.

**Team-draft interleaving** (Radlinski et al., 2008): the two models take turns
to add their best item not yet in the list; whichever has contributed fewer
items picks next, a coin decides ties. Each item keeps the team that added it,
so an event on a shown item is credited to the model that contributed it.

Examples
--------
>>> exp = Experiment.parse("exp1: control=sasrec 50, pop=popularity 30, mix=sasrec/itemknn 20")
>>> [v.name for v in exp.variants], exp.variants[2].models
(['control', 'pop', 'mix'], ('sasrec', 'itemknn'))
>>> exp.assign("user-42").name in {"control", "pop", "mix"}
True
>>> items, teams = team_draft(["a", "b", "c"], ["b", "d", "e"], k=4, seed=1)
>>> sorted(items) == sorted(set(items)), len(items), sorted(set(teams))
(True, 4, [0, 1])
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["Experiment", "Variant", "hash_position", "team_draft"]


def hash_position(salt: str, user_id: str) -> float:
    """The user's place in ``[0, 1)``: the first 8 bytes of SHA-256(``salt:user_id``), big-endian, over 2**64.

    >>> hash_position("exp1", "alice")  # printf exp1:alice | sha256sum starts 22dde087a54e1f67: 0x22dde087a54e1f67 / 2**64
    0.13619807540572326
    """
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


#: The newest users' positions: the worker asks for an active user's at every event and every list written.
_cached_position = functools.lru_cache(maxsize=1 << 18)(hash_position)


@dataclass(frozen=True)
class Variant:
    """One arm: the model whose list it serves, or two models interleaved."""

    name: str
    models: tuple[str, ...]
    weight: float

    @property
    def interleaved(self) -> bool:
        return len(self.models) == 2


_VARIANT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*([A-Za-z0-9_.-]+)(?:\s*/\s*([A-Za-z0-9_.-]+))?\s+([0-9.]+)\s*$")


@dataclass(frozen=True)
class Experiment:
    """Variants and their weights under one name (the hash's salt)."""

    name: str
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"experiment {self.name!r} has no variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: variant names repeat: {names}")
        if any(v.weight < 0 for v in self.variants) or sum(v.weight for v in self.variants) <= 0:
            raise ValueError(f"experiment {self.name!r}: weights must be >= 0 and not all 0")
        total = sum(v.weight for v in self.variants)
        object.__setattr__(self, "_bounds", [b / total for b in accumulate(v.weight for v in self.variants)])

    @classmethod
    def parse(cls, text: str) -> Experiment:
        """Read ``"name: variant=model weight, variant=model_a/model_b weight, ..."``."""
        name, sep, rest = text.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"an experiment is 'name: variant=model weight, ...', got {text!r}")
        variants = []
        for part in rest.split(","):
            match = _VARIANT.match(part)
            if match is None:
                raise ValueError(f"experiment {name.strip()!r}: cannot read variant {part.strip()!r} "
                                 "(expected 'variant=model weight' or 'variant=model_a/model_b weight')")  # fmt: skip
            label, first, second, weight = match.groups()
            if second == first:
                raise ValueError(f"experiment {name.strip()!r}: variant {label!r} interleaves {first!r} with itself")
            variants.append(Variant(label, (first, second) if second else (first,), float(weight)))
        return cls(name.strip(), tuple(variants))

    @property
    def models(self) -> tuple[str, ...]:
        """Every model a variant uses, in order of first use."""
        return tuple(dict.fromkeys(m for v in self.variants for m in v.models))

    def assign(self, user_id: str) -> Variant:
        """The user's variant (see the module's documentation for the rule)."""
        u = _cached_position(self.name, user_id)
        for variant, bound in zip(self.variants, self._bounds, strict=True):  # type: ignore[attr-defined]
            if u < bound:
                return variant
        return self.variants[-1]


def team_draft(a: Sequence[str], b: Sequence[str], k: int, seed: int) -> tuple[list[str], list[int]]:
    """Team-draft interleaving of ``a`` and ``b`` to ``k`` items: the items and, per item, 0 (from ``a``) or 1.

    The coin that decides who picks first in a round comes from ``seed`` (a 64-bit linear
    congruential generator: the same seed, the same list).

    >>> team_draft(["a", "b"], ["c", "d"], k=4, seed=0)  # each round, both teams add one item
    (['a', 'c', 'b', 'd'], [0, 1, 0, 1])
    """
    items: list[str] = []
    teams: list[int] = []
    used: set[str] = set()
    at_a = at_b = taken_a = taken_b = 0
    len_a, len_b = len(a), len(b)
    state = seed & _MASK
    while len(items) < k:
        while at_a < len_a and a[at_a] in used:
            at_a += 1
        while at_b < len_b and b[at_b] in used:
            at_b += 1
        if at_a >= len_a and at_b >= len_b:
            break
        if taken_a != taken_b:
            team = 0 if taken_a < taken_b else 1
        else:
            state = (state * 6364136223846793005 + 1442695040888963407) & _MASK
            team = state >> 63
        if team == 0 and at_a >= len_a:
            team = 1
        elif team == 1 and at_b >= len_b:
            team = 0
        if team == 0:
            item = a[at_a]
            at_a += 1
            taken_a += 1
        else:
            item = b[at_b]
            at_b += 1
            taken_b += 1
        items.append(item)
        teams.append(team)
        used.add(item)
    return items, teams


_MASK = (1 << 64) - 1
