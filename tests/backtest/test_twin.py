"""The offline twin of an experiment: the same split and the same figures as the live path."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from models import create
from streamrec.backtest.cli import backtest_models
from streamrec.backtest.sources import EventLog
from streamrec.cli import main
from streamrec.events import encode
from streamrec.experiment_report import experiment_report
from streamrec.experiments import Experiment
from streamrec.live_quality import LiveQuality
from streamrec.pipeline import RecommendationPipeline
from tests.unit.test_live_quality import _log

SPEC = "twin: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1"


def test_the_twin_gives_each_single_model_variant_the_live_figures_exactly() -> None:
    events = _log(3000)
    exp = Experiment.parse(SPEC)
    options = {"ks": [10, 20], "freshness": 0.0, "memory": "off", "progress": False}
    result, failed = backtest_models(
        EventLog.from_events(events), ["itemknn"], 0, {}, "adaptive", options, lists="as-written", experiment=exp
    )
    assert not failed and set(result.models) == {"itemknn", "popularity", "mix"}
    offline = result.experiment["variants"]
    pipe = RecommendationPipeline.from_names(["popularity", "itemknn"], "itemknn", top_n=20)  # adaptive fallback
    pipe.use(LiveQuality(["popularity", "itemknn"], (10, 20), experiment=exp), exp)
    counts: Counter[str] = Counter()
    for event in events:
        counts.update(pipe.process([event]).quality)
    live = experiment_report(exp, dict(counts), {}, k=10)["variants"]
    for name in ("knn", "pop"):
        assert offline[name]["scored"] == live[name]["scored"]
        assert offline[name]["HR@10"] == pytest.approx(live[name]["HR@10"], abs=1e-12)
        assert offline[name]["MRR"] == pytest.approx(live[name]["MRR"], abs=1e-12)
    assert offline["mix"]["scored"] == live["mix"]["scored"]
    assert offline["mix"]["winner"] == live["mix"]["winner"] == "itemknn"  # the coins differ, the verdict not
    assert sum(offline[v]["users"] for v in offline) == len({e.user_id for e in events})


def test_backtest_experiment_from_the_command_line(tmp_path, capsys) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(encode(e) for e in _log(1500)) + b"\n")
    out = tmp_path / "out"
    code = main(["backtest", str(path), "--models", "itemknn", "--experiment", SPEC, "--lists", "as-written",
                 "--quiet", "--no-plots", "--memory", "off", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "interleaving mix" in capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["experiment"]["variants"]) == {"knn", "pop", "mix"}
    assert saved["config"]["lists"] == "as-written" and saved["config"]["experiment"].startswith("twin:")


def test_an_experiment_with_a_model_that_cannot_be_made_is_refused() -> None:
    from streamrec.backtest.twin import twin_models

    with pytest.raises(ValueError, match="not among"):
        twin_models(Experiment.parse("e: a=sasrec 1"), {"itemknn": create("itemknn")}, lambda m: m)
