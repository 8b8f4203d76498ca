"""The V-SKNN reference follows session-rec's definition: position weights, recent sampling, step decay."""

from __future__ import annotations

import pytest

from bench.vsknn import VSKNN, main
from models import Interactions


def _reference(**params: int) -> VSKNN:
    ref = VSKNN(**params)
    # n1 shares the user's older item x, n2 the newer y; n2 was active last
    ref.learn(Interactions.from_columns(["n1", "n1", "n2", "n2", "u", "u"], ["x", "a", "y", "b", "x", "y"],
                                        timestamps=[1, 2, 3, 4, 5, 6]))  # fmt: skip
    return ref


def test_scores_weigh_shared_items_by_position_and_neighbours_by_the_step_back_to_them() -> None:
    # weights x = 1/2, y = 2/2; sim(n1) = 0.5 / 2, sim(n2) = 1 / 2; n1 shares x, one step behind the newest
    assert _reference().scores("u") == pytest.approx({"x": 0.125, "a": 0.125, "y": 0.5, "b": 0.5})
    assert _reference().recommend(["u"], k=5).items == [["b", "a"]]


def test_only_the_most_recent_sessions_are_sampled_and_the_most_similar_kept() -> None:
    assert _reference(sample_size=1).recommend(["u"], k=5).items == [["b"]]  # n2 is the more recent
    assert _reference(k=1).recommend(["u"], k=5).items == [["b"]]  # n2 is the more similar
    assert _reference(last_n=1).scores("u") == pytest.approx({"y": 1.0, "b": 1.0})  # the session is [y]


def test_a_replay_prints_every_model_s_figures(tmp_path, capsys) -> None:
    log = tmp_path / "clicks.tsv"
    rows = [f"s{n // 3}\ti{(n * 7) % 11}\t{1_600_000_000 + n}" for n in range(300)]
    log.write_text("SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n")
    assert main([str(log), "--models", "popularity", "--k", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert '"vsknn"' in out and '"popularity"' in out and "HR@10" in out
