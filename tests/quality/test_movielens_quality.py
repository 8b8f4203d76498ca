"""Quality on the real MovieLens 100K: the figures the README reports, within a margin.

These are the only tests that need the real data set (its licence forbids
shipping it). Without it they skip and say how to get it; every other test,
the integration tests included, runs on generated MovieLens-format files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import models
from streamrec.backtest import Prequential, movielens_log
from streamrec.served import ServedLists


@pytest.fixture(scope="module")
def movielens_figures(real_movielens_dir: Path) -> dict[str, dict[str, float]]:
    """Prequential replay of all 100,000 ratings as the README's backtest runs it.

    Micro-batches of 1,000 events; a user without history is served the
    popularity list, as the live system serves the fallback.
    """
    names = ("popularity", "itemknn", "isgd")
    served = {n: models.create(n) if n == "popularity" else ServedLists(models.create(n)) for n in names}
    result = Prequential(served, ks=(10,), batch_size=1000, memory="state").run(movielens_log(real_movielens_dir))
    return {name: result.models[name].overall for name in names}


def test_every_rating_is_scored(movielens_figures) -> None:
    assert {figures["scored"] for figures in movielens_figures.values()} == {100_000}


def test_learned_models_reach_the_reported_hit_rate(movielens_figures) -> None:
    # README backtest: popularity 0.0559, itemknn 0.0571, isgd 0.0544 (deterministic: seeded models)
    for name, floor in {"popularity": 0.053, "itemknn": 0.054, "isgd": 0.051}.items():
        assert movielens_figures[name]["HR@10"] >= floor, (name, movielens_figures[name])
    # a random list of 10 of 1,682 films would hit 0.6% of the time
    assert movielens_figures["itemknn"]["NDCG@10"] > 0.025


def test_personal_models_cover_far_more_of_the_catalogue(movielens_figures) -> None:
    popular = movielens_figures["popularity"]["coverage@10"]
    assert movielens_figures["itemknn"]["coverage@10"] > 3 * popular
    assert movielens_figures["isgd"]["coverage@10"] > 1.5 * popular
