"""Offline backtests: replay a recorded event log through online models, test then train.

- :mod:`streamrec.backtest.sources`: logs in time order (files, MovieLens, Kafka topics);
- :mod:`streamrec.backtest.prequential`: the harness (:class:`Prequential`);
- :mod:`streamrec.backtest.metrics`: HR@K, NDCG@K, MRR, coverage, RMSE, MAE;
- :mod:`streamrec.backtest.report`: ``results.json``, ``results.md``, plots, README table;
- :mod:`streamrec.backtest.cli`: ``streamrec backtest``.

Examples
--------
>>> from models import create
>>> from streamrec.events import Interaction
>>> events = [Interaction(f"u{j % 3}", f"i{j % 4}", float(j)) for j in range(40)]
>>> result = Prequential({"popularity": create("popularity")}, ks=(2,), batch_size=8).run(events)
>>> sorted(result.models), result.models["popularity"].overall["scored"]
(['popularity'], 40)
"""

from streamrec.backtest.prequential import BacktestResult, ModelResult, Prequential
from streamrec.backtest.sources import EventLog, load_log, movielens_log, read_kafka_topic

__all__ = ["BacktestResult", "EventLog", "ModelResult", "Prequential", "load_log", "movielens_log", "read_kafka_topic"]
