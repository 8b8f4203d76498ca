"""Live quality from the stream, A/B assignment and team-draft interleaving, without services.

The live figures must be the backtest's: a pipeline fed one event per batch
scores each event against the lists written after the events before it,
which is ``streamrec backtest`` at freshness 0 with the served fallback.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from models import create
from streamrec.backtest.prequential import BacktestResult, Prequential
from streamrec.backtest.sources import EventLog
from streamrec.events import ForgetUser, Interaction
from streamrec.experiment_report import experiment_report
from streamrec.experiments import Experiment, hash_position, team_draft
from streamrec.live_quality import LiveQuality, summarise
from streamrec.pipeline import RecommendationPipeline
from streamrec.served import ServedLists

MODELS = ("popularity", "itemknn")
KS = (10, 20)


def _log(n: int = 3000, users: int = 150, items: int = 120, seed: int = 3) -> list[Interaction]:
    """Users who move along item 'chains' (i, i+1, ...): item-kNN learns them, popularity does not."""
    rng = random.Random(seed)
    at = {u: rng.randrange(items) for u in range(users)}
    events = []
    for t in range(n):
        u = rng.randrange(users)
        at[u] = (at[u] + (1 if rng.random() < 0.8 else rng.randrange(items))) % items
        events.append(Interaction(f"u{u}", f"i{at[u]}", float(t)))
    return events


def as_written_backtest(events: list) -> BacktestResult:
    """``streamrec backtest --lists as-written`` at freshness 0 of ``MODELS``: what live evaluation must equal."""
    models = {m: ServedLists(create(m), cached=True, top_n=max(KS)) for m in MODELS}
    return Prequential(models, ks=KS, freshness=0.0, memory="off", progress=False).run(EventLog.from_events(events))


def _live(events: list[Interaction], batch: int, experiment: Experiment | None = None) -> dict[str, float]:
    pipe = RecommendationPipeline.from_names(MODELS, "itemknn", top_n=max(KS))
    pipe.use(LiveQuality(MODELS, KS, experiment=experiment), experiment)
    counts: Counter[str] = Counter()
    for start in range(0, len(events), batch):
        counts.update(pipe.process(events[start : start + batch], now=0.0).quality)
    return dict(counts)


def test_live_figures_equal_the_backtest_at_freshness_zero_with_one_event_per_batch() -> None:
    events = _log()
    live = summarise(_live(events, batch=1), KS)
    offline = as_written_backtest(events)
    for model in MODELS:
        figures = offline.models[model]
        assert live[model]["all"]["scored"] == figures.overall["scored"] == len(events)
        for k in KS:
            assert live[model]["all"][f"HR@{k}"] == pytest.approx(figures.overall[f"HR@{k}"], abs=1e-12), model
        assert live[model]["all"]["MRR"] == pytest.approx(figures.overall["MRR"], abs=1e-12), model
        for bucket in ("none", "1-4", "5+"):
            assert live[model][bucket]["scored"] == figures.by_history[bucket]["scored"], (model, bucket)
            assert live[model][bucket]["HR@10"] == pytest.approx(figures.by_history[bucket]["HR@10"], abs=1e-12)
    assert live["itemknn"]["all"]["HR@10"] > 1.5 * live["popularity"]["all"]["HR@10"]  # the log is made for it


def test_larger_batches_score_against_older_lists_and_count_every_event() -> None:
    events = _log()
    per_event = summarise(_live(events, batch=1), KS)
    batched = summarise(_live(events, batch=200), KS)
    assert batched["itemknn"]["all"]["scored"] == len(events)
    assert batched["itemknn"]["all"]["HR@10"] < per_event["itemknn"]["all"]["HR@10"]  # staler lists miss more


def test_a_user_known_to_the_models_but_not_here_is_counted_unknown_not_as_a_miss() -> None:
    live = LiveQuality(["itemknn"], ks=(5,))
    counts = live.score([Interaction("moved", "a", 1.0), Interaction("moved", "b", 2.0)], has_history=lambda u: True)
    assert counts == {"itemknn|-|unknown": 2.0}
    live.score([ForgetUser("moved", 3.0), Interaction("moved", "c", 4.0)], has_history=lambda u: False)
    assert len(live) == 0


def test_assignment_is_deterministic_documented_and_within_two_percent_of_the_weights() -> None:
    exp = Experiment.parse("checkout: control=sasrec 70, treatment=itemknn 30")
    again = Experiment.parse("checkout: control=sasrec 70, treatment=itemknn 30")
    users = [f"user-{n}" for n in range(10_000)]
    split = Counter(exp.assign(u).name for u in users)
    assert abs(split["control"] / 10_000 - 0.7) < 0.02 and abs(split["treatment"] / 10_000 - 0.3) < 0.02
    assert all(exp.assign(u) == again.assign(u) for u in users[:500])
    assert all((hash_position("checkout", u) < 0.7) == (exp.assign(u).name == "control") for u in users[:500])
    other = Experiment.parse("other: control=sasrec 70, treatment=itemknn 30")  # another name: another salt
    assert sum(exp.assign(u).name != other.assign(u).name for u in users) > 3000  # 2 * 0.7 * 0.3 = 42% move


@pytest.mark.parametrize("text", ["no colon", "e: a=sasrec", "e: a=sasrec 1, a=itemknn 1", "e: a=x/x 1", "e: a=x -1"])
def test_bad_experiments_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"experiment|variant"):
        Experiment.parse(text)


def test_an_experiment_naming_an_unconfigured_model_is_refused() -> None:
    with pytest.raises(ValueError, match="not configured"):
        RecommendationPipeline.from_names(["popularity"], "popularity").use(None, Experiment.parse("e: a=sasrec 1"))


def test_team_draft_alternates_keeps_each_items_team_and_never_repeats() -> None:
    for seed in range(50):
        items, teams = team_draft(list("abcdefghij"), list("bdfxyzuvwq"), k=8, seed=seed)
        assert len(items) == len(set(items)) == 8
        assert abs(teams.count(0) - teams.count(1)) <= 1
        for item, team in zip(items, teams, strict=True):
            assert item in (list("abcdefghij") if team == 0 else list("bdfxyzuvwq"))
    assert team_draft(["a"], ["b", "c", "d"], k=4, seed=0)[0][-2:] == ["c", "d"]  # one side runs out


def test_each_variant_serves_its_list_on_the_plain_key_and_says_so() -> None:
    exp = Experiment.parse("e: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1")
    pipe = RecommendationPipeline.from_names(MODELS, "itemknn", top_n=10)
    pipe.use(LiveQuality(MODELS, (10,), experiment=exp), exp)
    out = pipe.process(_log(600))
    plain = {doc.user_id: doc for doc, is_plain in out.rec_lists("itemknn") if is_plain}
    assert set(plain) == set(out.users)
    for user, doc in plain.items():
        variant = exp.assign(user)
        assert doc.variant == variant.name
        assert doc.model == (variant.name if variant.interleaved else variant.models[0])
    mixed = [doc for doc in plain.values() if doc.variant == "mix"]
    assert mixed and all(set(doc.items) <= set(out.lists["itemknn"].as_dict()[doc.user_id]) |
                         set(out.lists["popularity"].as_dict()[doc.user_id]) for doc in mixed)  # fmt: skip


def test_interleaving_credits_the_better_model_and_the_report_names_it() -> None:
    exp = Experiment.parse("e: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1")
    events = _log(6000, users=300)
    counts = _live(events, batch=20, experiment=exp)
    report = experiment_report(exp, counts, {}, k=10)["variants"]
    assert report["mix"]["winner"] == "itemknn" and report["mix"]["share_ci"][0] > 0.5
    assert report["pop"]["HR@10_diff"] < 0 and report["pop"]["separated"]
    assert sum(report[v]["scored"] for v in report) == len(events)
