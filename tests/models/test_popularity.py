"""Popularity's shared ranking takes a shortcut; it must give what the full matrix gives."""

from __future__ import annotations

import numpy as np

from models.base import Interactions
from models.popularity import Popularity


class FullMatrixPopularity(Popularity):
    """The same model through the general users x items path."""

    personalized = True


def test_global_shortcut_equals_full_matrix_with_ties_and_exclusions() -> None:
    rng = np.random.default_rng(0)
    users = [f"u{n}" for n in rng.integers(0, 40, 600)]
    items = [f"i{n}" for n in rng.integers(0, 25, 600)]  # few items: many ties
    batch = Interactions.from_columns(users, items, timestamps=np.zeros(600))
    fast, full = Popularity(half_life=None), FullMatrixPopularity(half_life=None)
    fast.learn(batch)
    full.learn(batch)
    fast.forget_user("u3")
    full.forget_user("u3")
    who = [f"u{n}" for n in range(45)]
    exclude = {"u1": ["i0", "i1", "nope"], "u7": [f"i{n}" for n in range(20)]}
    for k in (1, 5, 30):
        a = fast.recommend(who, k=k, exclude=exclude)
        b = full.recommend(who, k=k, exclude=exclude)
        assert a.items == b.items
        assert a.scores == b.scores


def test_top_k_breaks_ties_at_the_cut_by_lowest_index() -> None:
    from models.ranking import top_k

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, (50, 40)).astype(np.float32)
    for k in (1, 7, 39, 40, 60):
        idx, vals = top_k(scores, k)
        for r in range(len(scores)):
            want = sorted(range(40), key=lambda j: (-scores[r, j], j))[:k]
            assert idx[r].tolist() == want
            assert vals[r].tolist() == scores[r, want].tolist()
