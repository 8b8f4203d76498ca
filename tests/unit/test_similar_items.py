"""Similar items read row by row and ranked over a row's head give exactly the lists of a full sort."""

from __future__ import annotations

import numpy as np

from models import Interactions
from models.itemknn import ItemKNN
from streamrec.serving.similar import similar_items


def _reference(model: ItemKNN, items: list[str], k: int, unavailable: set[str]) -> dict[str, tuple[list, list]]:
    """Each item's neighbours and similarities by a full stable sort of ``C[a, b] / (n_a n_b) ** alpha``.

    Read from a copy of the whole matrix (``cooccurrence()``); ties: lower row first.
    """
    matrix = model.cooccurrence().tocsr()
    counts = model.item_counts().astype(np.float64)
    inv = np.where(counts > 0, np.power(np.maximum(counts, 1), -model.alpha), 0.0)
    ids = model.item_index.ids
    out = {}
    for item in items:
        row = model.item_index.get(item)
        cols = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]
        sims = matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]] * inv[row] * inv[cols]
        keep = (cols != row) & (sims > 0)
        cols, sims = cols[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")
        pairs = zip(cols[order].tolist(), sims[order].tolist(), strict=True)
        ranked = [(ids[c], sim) for c, sim in pairs if ids[c] not in unavailable][:k]
        out[item] = ([i for i, _ in ranked], [s for _, s in ranked])
    return out


def test_row_reads_and_head_ranking_match_a_full_sort_with_ties_and_unavailable_items() -> None:
    rng = np.random.default_rng(3)
    n = 20_000  # few items, long rows: many ties at the cut of the head
    users = [f"u{x}" for x in rng.integers(0, 300, n)]
    items = [f"i{x}" for x in rng.integers(0, 400, n)]
    model = ItemKNN()
    for a in range(0, n, 1000):
        model.learn(Interactions.from_columns(users[a : a + 1000], items[a : a + 1000]))
    wanted = sorted(set(items))[:60]
    for unavailable in (set(), set(sorted(set(items))[:150])):  # enough hidden to exhaust a head
        rows = similar_items(model, wanted, 10, unavailable)
        whole = _reference(model, wanted, 10, unavailable)
        assert rows == whole
        assert {i: lst[0] for i, lst in rows.items()} == {i: lst[0] for i, lst in whole.items()}
