"""Models that track the item rows they change send the same deltas as a comparison of every row."""

from __future__ import annotations

import numpy as np
import pytest

import models
from models import Interactions

TRACKED = [
    pytest.param(name, params, id=f"{name}-{j}")
    for name in models.available()
    if models.model_class(name).item_changes_tracked
    for j, params in enumerate(models.model_class(name)._test_params())
    if models.model_class(name).shares_state and models.create(name, **params).shares_state
]


def _batches(seed: int, n_batches: int = 12, size: int = 40) -> list[Interactions]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        users = rng.integers(0, 30, size)
        items = np.minimum(rng.zipf(1.4, size), 90) + (b // 4) * 10  # later batches bring new items
        out.append(
            Interactions.from_columns(
                [f"u{x}" for x in users],
                [f"i{x}" for x in items],
                timestamps=1_000.0 * b + np.arange(size, dtype=float),
                ratings=rng.integers(1, 6, size).astype(float),
            )
        )
    return out


def _same(a, b) -> None:
    assert a.items == b.items
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    assert sorted(a.globals) == sorted(b.globals)


def test_the_tracked_models_include_the_live_defaults() -> None:
    assert {"popularity", "itemknn", "sasrec"} <= {p.values[0] for p in TRACKED}


@pytest.mark.parametrize(("name", "params"), TRACKED)
@pytest.mark.parametrize("capped", [False, True])
def test_tracked_deltas_equal_full_comparisons(name: str, params: dict, capped: bool) -> None:
    tracked, full = models.create(name, **params), models.create(name, **params)
    full.item_changes_tracked = False  # this instance compares every row
    for model in (tracked, full):
        if capped:
            model.set_capacity(max_items=60)  # evictions free rows that new items reuse
        model.add_items([f"c{j}" for j in range(20)])
        model.begin_sharing()
    for n, batch in enumerate(_batches(1)):
        tracked.learn(batch)
        full.learn(batch)
        if n % 3 == 2:
            _same(tracked.take_item_delta(), full.take_item_delta())
        if n == 5:
            for model in (tracked, full):
                model.add_items([f"late{j}" for j in range(5)])
