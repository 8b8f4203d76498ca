"""The item index of the embedding models follows their training: lists from it equal the exact lists."""

from __future__ import annotations

import numpy as np

from models import Interactions
from models.retrieval import ItemVectorIndex
from models.sequence import SASRec


def _stream(seed: int, n: int, users: int, items: int) -> Interactions:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = (np.minimum(rng.zipf(1.2, n), items) - 1 + (u % 5) * 11) % items
    return Interactions.from_columns([f"u{x}" for x in u], [f"i{x}" for x in i], timestamps=np.arange(n, dtype=float))


def test_the_index_follows_marked_and_dropped_rows() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((4000, 9)).astype(np.float32)
    index = ItemVectorIndex(min_items=1000, nlist=32, nprobe=32)  # every list probed: exact
    query = rng.standard_normal((3, 9)).astype(np.float32)

    def exact(live: np.ndarray) -> list[set[int]]:
        scores = query @ table.T
        scores[:, ~live] = -np.inf
        return [set(np.argsort(-row)[:20].tolist()) for row in scores]

    live = np.ones(len(table), dtype=bool)
    assert [set(r.tolist()) for r in index.search(query, 20, lambda r: table[r], len(table))] == exact(live)
    changed = rng.choice(len(table), 300, replace=False)
    table[changed] *= 3.0  # these rows now win
    index.mark(changed)
    dropped = changed[:50]
    index.drop(dropped)
    live[dropped] = False
    found = index.search(query, 20, lambda r: table[r], len(table), lambda r: r[live[r]])
    assert [set(r.tolist()) for r in found] == exact(live)
    assert index.n_indexed == len(table) - 50
    assert index.search(query, 5, lambda r: table[r], 999) is None  # below min_items: no index


def test_sasrec_lists_from_the_index_equal_exact_lists_while_it_trains() -> None:
    params = {"n_factors": 8, "max_len": 5, "batch_size": 32, "n_negatives": 64, "device": "cpu", "seed": 3}
    indexed = SASRec(**params, ann_min_items=500, ann_nprobe=10_000)  # every list probed: retrieval is exact
    exact = SASRec(**params)
    for model in (indexed, exact):
        model.set_capacity(max_items=900)  # evictions free rows the index must drop
        model.add_items([f"i{j}" for j in range(800)])
    stream = _stream(0, 6000, 300, 1200)
    users = [f"u{x}" for x in range(0, 300, 7)] + ["nobody"]
    compared = 0
    for start in range(0, len(stream), 1000):
        part = stream.select(np.arange(start, start + 1000))
        indexed.learn(part)
        exact.learn(part)
        assert indexed.n_items >= 500
        a = indexed.recommend(users, k=10, exclude={"u7": ["i0", "i1"]})
        b = exact.recommend(users, k=10, exclude={"u7": ["i0", "i1"]})
        assert a.items == b.items
        assert [indexed.recommend([u], k=10).items for u in users[:5]] == [
            exact.recommend([u], k=10).items for u in users[:5]
        ]
        compared += 1
    assert indexed._ann.n_indexed == indexed.item_index.n_live
    assert compared == 6


def test_two_tower_lists_from_the_index_equal_exact_lists_while_it_trains() -> None:
    from models.two_tower import TwoTower

    params = {"n_factors": 8, "micro_batch": 32, "n_negatives": 32, "device": "cpu", "seed": 3}
    indexed = TwoTower(**params, ann_min_items=500, ann_nprobe=10_000)  # every list probed
    exact = TwoTower(**params)
    for model in (indexed, exact):  # no tags: an item's output moves only when the item is trained
        model.set_capacity(max_items=900)
        model.add_items([f"i{j}" for j in range(800)])
    stream = _stream(1, 5000, 300, 1200)
    users = [f"u{x}" for x in range(0, 300, 7)] + ["nobody"]
    for start in range(0, len(stream), 1000):
        part = stream.select(np.arange(start, start + 1000))
        indexed.learn(part)
        exact.learn(part)
        a = indexed.recommend(users, k=10, exclude={"u7": ["i0", "i1"]})
        b = exact.recommend(users, k=10, exclude={"u7": ["i0", "i1"]})
        assert a.items == b.items
        assert a.reasons == b.reasons
    assert indexed._ann.n_indexed == indexed.item_index.n_live


def test_two_tower_with_shared_tags_keeps_most_of_the_exact_lists() -> None:
    from models.two_tower import TwoTower

    params = {"n_factors": 8, "micro_batch": 32, "n_negatives": 32, "device": "cpu", "seed": 3}
    indexed = TwoTower(**params, ann_min_items=500, ann_nprobe=10_000)
    exact = TwoTower(**params)
    tags = [(f"t{j % 7}",) for j in range(1200)]
    for model in (indexed, exact):
        model.add_items([f"i{j}" for j in range(1200)], tags=tags)
    stream = _stream(2, 4000, 300, 1200)
    indexed.learn(stream)
    exact.learn(stream)
    users = [f"u{x}" for x in range(300)]
    a, b = indexed.recommend(users, k=10).items, exact.recommend(users, k=10).items
    overlap = np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)])
    print(f"two_tower with shared tags: index lists overlap exact lists {overlap:.3f}")
    assert overlap >= 0.9, overlap
