"""Similar items: an item's nearest neighbours by item-to-item co-occurrence, from a model's public state.

:func:`similar_items` ranks, for each given item, the other items by the
item-kNN similarity ``C[a, b] / (n_a n_b) ** alpha`` of
:class:`models.itemknn.ItemKNN` (the same number as ``ItemKNN.similarity``),
read through the model's public ``cooccurrence_row()`` and ``item_counts()``. The
worker writes the lists of the items a batch touched (at most once a second)
to ``{prefix}:similar:{NN}:{item}``; reads filter them like every list.

Examples
--------
>>> from models import Interactions
>>> from models.itemknn import ItemKNN
>>> model = ItemKNN(alpha=0.5)
>>> model.learn(Interactions.from_columns(
...     ["ann", "ann", "bob", "bob", "bob", "cat", "cat"],
...     ["tea", "cake", "tea", "cake", "jam", "tea", "jam"]))
>>> lists = similar_items(model, ["tea", "unknown"], k=2)
>>> lists["tea"][0], [round(s, 3) for s in lists["tea"][1]], "unknown" in lists
(['cake', 'jam'], [0.816, 0.816], False)
>>> round(model.similarity("tea", "cake"), 3)
0.816
>>> similar_items(model, ["tea"], k=2, unavailable={"cake"})["tea"][0]
['jam']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["gives_similar_items", "similar_items"]


def gives_similar_items(model: Any) -> bool:
    """Whether ``model`` exposes the co-occurrence state :func:`similar_items` reads."""
    return all(hasattr(model, name) for name in ("cooccurrence_row", "item_counts", "alpha"))


def similar_items(
    model: Any, items: Iterable[str], k: int, unavailable: set[str] | None = None
) -> dict[str, tuple[list[str], list[float]]]:
    """Each known item's ``k`` most similar other items with their similarities, best first.

    Items the model does not know are left out; ``unavailable`` items are
    never neighbours. Reads one row of the counts per item
    (``cooccurrence_row``), not a copy of the whole matrix: every worker
    refreshes the lists of the items it touched every second, and a copy per
    refresh cost each worker a pass over every co-occurrence, a cost that grew
    with the workers.
    """
    wanted = [str(i) for i in items]
    rows = model.item_index.lookup(wanted) if wanted else np.zeros(0, dtype=np.int64)
    if not len(rows) or (rows < 0).all():
        return {}
    counts = model.item_counts().astype(np.float64)
    inv = np.zeros_like(counts)
    np.power(counts, -float(model.alpha), out=inv, where=counts > 0)
    ids = model.item_index.ids
    unavailable = unavailable or set()
    out: dict[str, tuple[list[str], list[float]]] = {}
    for item, row in zip(wanted, rows.tolist(), strict=True):
        if row < 0 or row >= len(counts):
            continue
        cols, data = model.cooccurrence_row(row)
        sims = data * inv[row] * inv[cols]
        keep = (cols != row) & (sims > 0)
        cols, sims = cols[keep], sims[keep]
        head = 4 * k + len(unavailable)  # enough that the unavailable and unknown rarely exhaust it
        if len(sims) > 2 * head:  # a long row: sort only what can make the list (ties at the cut included)
            cut = np.partition(sims, len(sims) - head)[len(sims) - head]
            top = np.flatnonzero(sims >= cut)
            lists = _ranked(top[np.argsort(-sims[top], kind="stable")], cols, sims, ids, unavailable, k)
            if len(lists[0]) == k or len(top) == len(sims):
                out[item] = lists
                continue
        out[item] = _ranked(np.argsort(-sims, kind="stable"), cols, sims, ids, unavailable, k)
    return out


def _ranked(
    order: np.ndarray, cols: np.ndarray, sims: np.ndarray, ids: Any, unavailable: set[str], k: int
) -> tuple[list[str], list[float]]:
    """The first ``k`` known, available items of ``cols`` in ``order``, with their similarities."""
    neighbours: list[str] = []
    scores: list[float] = []
    for j in order.tolist():
        other = ids[int(cols[j])]
        if other is None or other in unavailable:
            continue
        neighbours.append(other)
        scores.append(float(sims[j]))
        if len(neighbours) == k:
            break
    return neighbours, scores
