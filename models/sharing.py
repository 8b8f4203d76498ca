"""What a model shares across workers: the state of some users, and increments of its item state.

When the stream is split over several workers (Kafka partitions keyed by
user), each worker keeps the users of its partitions, and every worker needs
the item side (popularity, co-occurrences, item factors) of *all* events. A
model says what is which through :class:`~models.base.OnlineRecommender`'s
sharing methods, and the stream app moves the payloads defined here through
Kafka; models know nothing of Kafka:

- :class:`UserStates`: the per-user state of some users (factor rows, recent
  items, seen items), by user id, so that a partition's users can move to
  another worker;
- :class:`ItemDelta`: what learning changed on the item side since the last
  delta, by item id, as *additive* increments: every worker adds every other
  worker's deltas, so counts agree exactly once all deltas are applied, and
  SGD-trained tables follow an asynchronous scheme (each worker's steps, sent
  as differences, are added everywhere; a step computed from slightly stale
  item rows is the only difference from a single worker). The full item state
  is a delta from zero (:meth:`~models.base.OnlineRecommender.export_items`).

Payloads are arrays plus a JSON header, written as ``.npz`` bytes and read with
``allow_pickle=False``: nothing runs code on load.

Rows of new items and users start from :func:`id_rows`, a function of the
model's seed and the *id*, so that every worker initialises an item the same
way whichever events it saw first.

Examples
--------
>>> import numpy as np
>>> delta = ItemDelta("isgd", ["a", "b"], {"q": np.ones((2, 3), dtype=np.float32)})
>>> again = ItemDelta.from_bytes(delta.to_bytes())
>>> again.model, again.items, again.arrays["q"].shape
('isgd', ['a', 'b'], (2, 3))
>>> id_rows(["x", "y"], 4, seed=0, std=0.1).shape, bool((id_rows(["x"], 4, 0, 0.1) == id_rows(["x"], 4, 0, 0.1)).all())
((2, 4), True)
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ItemDelta", "UserStates", "id_rows", "item_parts", "sum_item_rows"]

_META = "__meta__"
#: The start of an uncompressed payload (a JSON header, then the arrays' raw bytes); compressed ones are ``.npz``.
_RAW = b"SRDELTA1"


def _pack(meta: dict[str, Any], arrays: dict[str, np.ndarray], compress: bool = True) -> bytes:
    """``meta`` and ``arrays`` as bytes: ``.npz`` (zlib) when ``compress``, else the raw layout below.

    Raw: ``_RAW``, the header's length (8 bytes, little-endian), the JSON
    header (``meta`` and each array's name, dtype, shape and byte range), then
    the arrays' bytes. Reading it is a few ``frombuffer`` calls, where an
    ``.npz`` goes through ``zipfile`` per array (the increments every worker
    reads from every other: 39% of applying them in the 8-worker profile).
    Object arrays are refused either way (nothing runs code on load).
    """
    if compress:
        buffer = io.BytesIO()
        header = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(buffer, **{_META: header}, **arrays)
        return buffer.getvalue()
    layout, blobs, at = [], [], 0
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects: not a payload")
        blobs.append(value.tobytes())
        layout.append([name, value.dtype.str, list(value.shape), at, value.nbytes])
        at += value.nbytes
    head = json.dumps({"meta": meta, "arrays": layout}, separators=(",", ":")).encode("utf-8")
    return b"".join([_RAW, len(head).to_bytes(8, "little"), head, *blobs])


def _unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if data[: len(_RAW)] != _RAW:  # .npz (compressed, or written before the raw layout)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
        return meta, arrays
    start = len(_RAW) + 8
    if len(data) < start:
        raise ValueError("a truncated payload")
    size = int.from_bytes(data[len(_RAW) : start], "little")
    head = json.loads(data[start : start + size].decode("utf-8"))
    body = start + size
    arrays = {}
    for name, dtype, shape, at, nbytes in head["arrays"]:
        kind = np.dtype(dtype)
        if kind.hasobject or body + at + nbytes > len(data):
            raise ValueError(f"array {name!r} of the payload is invalid or truncated")
        count = nbytes // kind.itemsize if kind.itemsize else 0
        arrays[name] = np.frombuffer(data, dtype=kind, count=count, offset=body + at).reshape(shape).copy()
    return head["meta"], arrays


@dataclass
class UserStates:
    """The per-user state of ``users`` in one model (rows of each array in ``users`` order).

    ``item_refs`` names the arrays whose entries are item rows: they travel as
    item ids (``items``, ``-1`` kept as padding) because each worker numbers
    items its own way. ``seen`` holds each user's seen item ids.
    """

    model: str
    users: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    seen: list[list[str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # the item ids that item_refs arrays point into
    item_refs: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def select(self, wanted: Sequence[str]) -> UserStates:
        """The states of the users in ``wanted`` (others ignored), in this payload's order."""
        keep = set(wanted)
        rows = [n for n, u in enumerate(self.users) if u in keep]
        take = np.asarray(rows, dtype=np.int64)
        return UserStates(
            self.model,
            [self.users[n] for n in rows],
            {k: v[take] for k, v in self.arrays.items()},
            [self.seen[n] for n in rows] if self.seen else [],
            self.items,
            self.item_refs,
            {k: [v[n] for n in rows] if isinstance(v, list) and len(v) == len(self.users) else v
             for k, v in self.extra.items()},
        )  # fmt: skip

    def records(self) -> dict[str, dict[str, Any]]:
        """One JSON-ready record per user (item references as ids), e.g. for a per-user changelog key.

        Examples
        --------
        >>> states = UserStates("m", ["ann"], {"h": np.array([[1, -1]])}, [["tea"]], ["jam", "tea"], ("h",))
        >>> states.records()["ann"]
        {'arrays': {'h': {'dtype': 'int64', 'value': ['tea', None]}}, 'seen': ['tea'], 'extra': {}}
        >>> UserStates.from_records("m", states.records()).records() == states.records()
        True
        """
        columns: dict[str, tuple[str, list[Any]]] = {}
        for name, values in self.arrays.items():
            rows = values.tolist()
            if name in self.item_refs:
                ids = self.items
                if values.ndim > 1:
                    rows = [[ids[j] if j >= 0 else None for j in row] for row in rows]
                else:
                    rows = [ids[j] if j >= 0 else None for j in rows]
            columns[name] = (str(values.dtype), rows)
        per_user = {k: v for k, v in self.extra.items() if isinstance(v, list) and len(v) == len(self.users)}
        out: dict[str, dict[str, Any]] = {}
        for n, user in enumerate(self.users):
            out[user] = {
                "arrays": {name: {"dtype": dtype, "value": rows[n]} for name, (dtype, rows) in columns.items()},
                "seen": self.seen[n] if self.seen else [],
                "extra": {k: v[n] for k, v in per_user.items()},
            }
        return out

    @classmethod
    def from_records(cls, model: str, records: dict[str, dict[str, Any]]) -> UserStates:
        """The inverse of :meth:`records` (users in the mapping's order)."""
        users = list(records)
        items: dict[str, int] = {}
        columns: dict[str, list[Any]] = {}
        dtypes: dict[str, str] = {}
        refs: set[str] = set()
        for user in users:
            for name, cell in records[user]["arrays"].items():
                dtypes[name] = cell["dtype"]
                value = cell["value"]
                if _holds_ids(value):
                    refs.add(name)
                columns.setdefault(name, []).append(value)
        arrays: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            if name in refs:
                values = [_ids_to_refs(v, items) for v in values]
            arrays[name] = np.asarray(values, dtype=dtypes[name])
        extra_keys = {k for user in users for k in records[user].get("extra", {})}
        extra = {k: [records[u].get("extra", {}).get(k) for u in users] for k in sorted(extra_keys)}
        seen = [list(records[u].get("seen", [])) for u in users]
        return cls(model, users, arrays, seen, list(items), tuple(sorted(refs)), extra)

    def to_bytes(self) -> bytes:
        sizes = np.array([len(s) for s in self.seen], dtype=np.int64)
        meta = {
            "kind": "users",
            "model": self.model,
            "users": self.users,
            "items": self.items,
            "item_refs": list(self.item_refs),
            "seen_items": [i for s in self.seen for i in s],
            "extra": self.extra,
        }
        return _pack(meta, {**{f"a.{k}": v for k, v in self.arrays.items()}, "seen_sizes": sizes})

    @classmethod
    def from_bytes(cls, data: bytes) -> UserStates:
        meta, arrays = _unpack(data)
        if meta.get("kind") != "users":
            raise ValueError(f"not a user-state payload: {meta.get('kind')!r}")
        sizes = arrays.pop("seen_sizes").tolist()
        flat, seen, at = meta["seen_items"], [], 0
        for n in sizes:
            seen.append(flat[at : at + n])
            at += n
        return cls(
            meta["model"],
            meta["users"],
            {k.removeprefix("a."): v for k, v in arrays.items()},
            seen,
            meta["items"],
            tuple(meta["item_refs"]),
            meta["extra"],
        )


def _holds_ids(value: Any) -> bool:
    """Whether a record's array value holds item ids (strings) rather than numbers."""
    while isinstance(value, list):
        if not value:
            return False
        value = next((v for v in value if v is not None), None) if not isinstance(value[0], list) else value[0]
    return isinstance(value, str)


def _ids_to_refs(value: Any, items: dict[str, int]) -> Any:
    if isinstance(value, list):
        return [_ids_to_refs(v, items) for v in value]
    if value is None:
        return -1
    return items.setdefault(value, len(items))


@dataclass
class ItemDelta:
    """Additive increments of a model's item-side state, by item id.

    ``arrays[name][n]`` is added to row ``items[n]`` of the model's item array
    ``name``; ``globals[name]`` to an array that belongs to no item (network
    weights, a global mean); ``extra`` carries what a model shares in its own
    form (item-kNN's co-occurrence pairs, a popularity anchor).
    """

    model: str
    items: list[str] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    globals: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.items and not self.globals and not self.extra_arrays and not self.extra

    def to_bytes(self, compress: bool = True) -> bytes:
        """The delta as one ``.npz`` payload; ``compress=False`` skips zlib (small, frequent increments)."""
        meta = {"kind": "items", "model": self.model, "items": self.items, "extra": self.extra}
        arrays = {f"a.{k}": v for k, v in self.arrays.items()}
        arrays.update({f"g.{k}": v for k, v in self.globals.items()})
        arrays.update({f"x.{k}": v for k, v in self.extra_arrays.items()})
        return _pack(meta, arrays, compress)

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemDelta:
        meta, arrays = _unpack(data)
        if meta.get("kind") != "items":
            raise ValueError(f"not an item-delta payload: {meta.get('kind')!r}")
        parts: dict[str, dict[str, np.ndarray]] = {"a": {}, "g": {}, "x": {}}
        for name, value in arrays.items():
            prefix, _, key = name.partition(".")
            parts[prefix][key] = value
        return cls(meta["model"], meta["items"], parts["a"], parts["g"], meta["extra"], parts["x"])


def item_parts(ids: Sequence[str], parts: int) -> np.ndarray:
    """The part (``0 .. parts - 1``) that owns each item id: CRC-32 of the id, the same in every process.

    Item state owned by item: the increments of item ``i`` go to the owner of
    part ``item_parts([i], n)[0]``, which merges every worker's (see
    :meth:`~models.base.OnlineRecommender.split_item_delta`).

    Examples
    --------
    >>> item_parts(["a", "b", "c"], 4).tolist() == item_parts(["a", "b", "c"], 4).tolist()
    True
    >>> set(item_parts([f"i{n}" for n in range(1000)], 4).tolist())
    {0, 1, 2, 3}
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    return np.fromiter((zlib.crc32(i.encode()) % parts for i in ids), dtype=np.int64, count=len(ids))


def sum_item_rows(
    deltas: Sequence[ItemDelta], nonnegative: bool = False
) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The item ids of ``deltas`` (first-seen order), each item array summed by id, each global array summed.

    Each delta holds an item at most once (as :meth:`~models.base.OnlineRecommender.take_item_delta`
    writes them). An array a delta lacks adds nothing to its items. ``nonnegative`` clips sums
    at 0 (counts, where a negated increment is subtracted from a sum that holds it). Items whose
    every array sums to 0 are left out, as ``take_item_delta`` leaves out rows that did not change.

    Examples
    --------
    >>> a = ItemDelta("m", ["x", "y"], {"n": np.array([1.0, 2.0])})
    >>> b = ItemDelta("m", ["y", "z"], {"n": np.array([3.0, 4.0])})
    >>> ids, arrays, _ = sum_item_rows([a, b])
    >>> ids, arrays["n"].tolist()
    (['x', 'y', 'z'], [1.0, 5.0, 4.0])
    >>> sum_item_rows([a, ItemDelta("m", ["x"], {"n": np.array([-1.0])})])[0]
    ['y']
    """
    at: dict[str, int] = {}
    rows = [
        np.fromiter((at.setdefault(i, len(at)) for i in d.items), dtype=np.int64, count=len(d.items)) for d in deltas
    ]
    ids = list(at)
    arrays: dict[str, np.ndarray] = {}
    globals_: dict[str, np.ndarray] = {}
    for delta, where in zip(deltas, rows, strict=True):
        for name, values in delta.arrays.items():
            if name not in arrays:
                arrays[name] = np.zeros((len(ids), *values.shape[1:]), dtype=values.dtype)
            arrays[name][where] += values  # no id twice in one delta: no lost update
        for name, values in delta.globals.items():
            globals_[name] = globals_[name] + values if name in globals_ else np.array(values, copy=True)
    if nonnegative:
        for values in arrays.values():
            np.maximum(values, 0, out=values)
    if arrays and len(deltas) > 1:  # rows that sum to 0 (a worker's own piece taken back): nothing to apply
        keep = np.zeros(len(ids), dtype=bool)
        for values in arrays.values():
            keep |= values.reshape(len(ids), -1).any(axis=1)
        if not keep.all():
            rows = np.flatnonzero(keep)
            ids = [ids[r] for r in rows.tolist()]
            arrays = {name: values[rows] for name, values in arrays.items()}
    return ids, arrays, globals_


def id_rows(ids: Sequence[str], dim: int, seed: int, std: float, salt: str = "") -> np.ndarray:
    """``(len(ids), dim)`` float32 rows drawn from ``N(0, std)``, each a function of ``(seed, salt, id)`` only.

    Each id is hashed to 64 bits (BLAKE2b); the row's normals come from a
    counter-based generator on that key (a SplitMix64 mix of ``key + pair``
    gives two 24-bit uniforms, Box-Muller two normals), vectorised over the
    ids, so a million-item catalogue gets its rows in about two seconds.
    """
    n = len(ids)
    out = np.empty((n, dim), dtype=np.float32)
    if n == 0 or dim == 0:
        return out
    prefix = f"{seed}:{salt}:"
    keys = np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{prefix}{key}".encode(), digest_size=8).digest(), "little") for key in ids),
        dtype=np.uint64,
        count=n,
    )
    pairs = (dim + 1) // 2
    counters = np.arange(pairs, dtype=np.uint64)
    scale = np.float32(2.0**-24)
    for start in range(0, n, 65_536):  # blocks bound the temporaries
        bits = _splitmix64(keys[start : start + 65_536, None] + counters[None, :])
        # two 24-bit uniforms per 64-bit word; u1 in (0, 1] so its logarithm is finite
        u1 = np.float32(1.0) - (bits >> np.uint64(40)).astype(np.float32) * scale
        u2 = ((bits >> np.uint64(8)) & np.uint64(0xFFFFFF)).astype(np.float32) * scale
        radius = np.sqrt(np.float32(-2.0) * np.log(u1))
        angle = np.float32(2.0 * np.pi) * u2
        block = out[start : start + 65_536]
        block[:, :pairs] = radius * np.cos(angle) * np.float32(std)
        block[:, pairs:] = (radius * np.sin(angle) * np.float32(std))[:, : dim - pairs]
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of ``x`` (uint64, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
