"""Sparse scoring (neighbourhood models on large catalogues) gives the lists dense scoring gives."""

from __future__ import annotations

import numpy as np
import pytest

from models import Interactions, create


def _stream(seed: int, n: int = 3000, users: int = 120, items: int = 400) -> Interactions:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = np.minimum(rng.zipf(1.3, n), items) - 1 + (u % 3) * 7
    return Interactions.from_columns([f"u{x}" for x in u], [f"i{x}" for x in i], timestamps=np.arange(n, dtype=float))


def _dense(model):  # the same model answering through _score
    model._score_sparse = lambda u, want: None
    return model


@pytest.mark.parametrize(("name", "params"), [("itemknn", {"dense_max_items": 1}), ("sknn", {"dense_max_items": 0})])
@pytest.mark.parametrize("evict", [False, True])
def test_sparse_lists_equal_dense_lists(name: str, params: dict, evict: bool) -> None:
    model = create(name, **params)
    if evict:  # tombstones among the item rows
        model.set_capacity(max_items=150)
    model.add_items([f"cat{j}" for j in range(50)])  # catalogue items nobody took: they score 0
    stream = _stream(1)
    for start in range(0, len(stream), 500):
        model.learn(stream.select(np.arange(start, min(start + 500, len(stream)))))
    assert model._score_sparse(np.array([0]), [10]) is not None
    users = [f"u{x}" for x in range(0, 120, 3)] + ["stranger"]
    exclude = {"u3": ["i0", "i1", "cat0"], "stranger": ["i2"]}
    for k in (5, 40, 600):  # 600: past the positive scores, into the items scoring 0
        sparse = model.recommend(users, k, exclude=exclude)
        one = [model.recommend([u], k) for u in users[:5]]
        dense_model = _dense(model)
        dense = dense_model.recommend(users, k, exclude=exclude)
        dense_one = [dense_model.recommend([u], k) for u in users[:5]]
        del model._score_sparse
        assert sparse.items == dense.items
        assert sparse.scores == dense.scores
        assert sparse.reasons == dense.reasons
        assert [r.items for r in one] == [r.items for r in dense_one]
        assert [r.reasons for r in one] == [r.reasons for r in dense_one]
