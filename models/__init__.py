"""Online recommendation models behind one protocol (:class:`OnlineRecommender`).

Models are plain Python, NumPy and torch: they import nothing from Kafka,
Faust or Redis. Look a model up by name with :func:`create`; modules load
lazily so that importing ``models`` does not import torch or River.

Examples
--------
>>> from models import Interactions, create
>>> model = create("popularity", half_life=None)
>>> model.learn(Interactions.from_columns(["u1", "u2"], ["a", "a"]))
>>> model.recommend(["new-user"], k=5).items
[['a']]
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from models.base import Interactions, OnlineRecommender, Recommendations

__all__ = ["MODEL_PATHS", "Interactions", "OnlineRecommender", "Recommendations", "available", "create", "model_class"]

#: Registry name -> "module:Class". A new model is one line here.
MODEL_PATHS: dict[str, str] = {
    "popularity": "models.popularity:Popularity",
    "adaptive_popularity": "models.adaptive_popularity:AdaptivePopularity",
    "itemknn": "models.itemknn:ItemKNN",
    "isgd": "models.isgd:ISGD",
    "biased_mf": "models.biased_mf:BiasedMF",
    "river_biased_mf": "models.river_reco:RiverBiasedMF",
    "river_funk_mf": "models.river_reco:RiverFunkMF",
    "river_fm": "models.river_fm:RiverFM",
    "torch_bpr": "models.torch_mf:TorchBPR",
    "sasrec": "models.sequence:SASRec",
    "hybrid": "models.hybrid:Hybrid",
    "sknn": "models.sknn:SessionKNN",
    "two_tower": "models.two_tower:TwoTower",
}


def available() -> list[str]:
    """Names of the models whose module is present in this installation."""
    names = []
    for name, target in MODEL_PATHS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def model_class(name: str) -> type[OnlineRecommender]:
    """Import and return the class registered as ``name``."""
    try:
        target = MODEL_PATHS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_PATHS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, **params: Any) -> OnlineRecommender:
    """Create model ``name`` with hyperparameters ``params``."""
    return model_class(name)(**params)
