"""The freshness report: one replay per setting, the table, the history split and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.backtest import EventLog, Prequential
from streamrec.backtest.freshness import FreshnessReport, parse_settings, run_settings
from streamrec.cli import main
from streamrec.events import Interaction
from tests.backtest.test_cli import log_file  # noqa: F401 - the fixture
from tests.backtest.test_prequential import OracleRecommender


def test_settings_parse_durations_and_refresh_intervals() -> None:
    settings = parse_settings("0, 1s,1m,1h,refresh:1h,refresh:1d")
    assert [s.label for s in settings] == ["0 s", "1 s", "1 min", "1 h", "hourly refresh", "daily refresh"]
    assert [(s.freshness, s.refresh) for s in settings[-2:]] == [(0.0, 3600.0), (0.0, 86400.0)]
    assert settings[3].option == "--freshness 1h" and settings[4].option == "--refresh 1h"
    with pytest.raises(ValueError, match="refresh"):
        parse_settings("refresh:0")


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_oracle_loses_what_staleness_hides(jobs: int) -> None:
    # each user clicks 30 distinct items one minute apart: the next item is known only from the user's latest one
    events = [Interaction(f"u{u}", f"i{u}-{j}", 1000.0 * u + 60.0 * j) for u in range(20) for j in range(30)]
    log = EventLog.from_events(events)
    settings = parse_settings("0,90s,1h,refresh:1d")

    def run_one(setting):  # type: ignore[no-untyped-def]
        return Prequential(
            {"oracle": OracleRecommender(log)}, ks=(1,), freshness=setting.freshness, refresh=setting.refresh
        ).run(log)

    report = FreshnessReport(settings, run_settings(settings, run_one, jobs=jobs))
    hr = report.values("oracle", "HR@1")
    assert hr[0] == 1.0  # every earlier event: the next item is first
    assert hr[1] == pytest.approx(1 / 30)  # 90 s old: the previous click is missing, only first clicks hit
    assert hr[3] <= hr[1]
    by_history = [report.values("oracle", "HR@1", b)[1] for b in ("none", "1-4", "5+")]
    assert by_history == [0.5, 0.0, 0.0]  # the first two clicks of a user see none of their own events
    md = report.markdown()
    assert "| `oracle` | 1.0000 |" in md and "daily refresh" in md


def test_the_cli_writes_the_report_plots_and_readme_section(log_file: Path, tmp_path: Path) -> None:  # noqa: F811
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- freshness:start -->\nold\n<!-- freshness:end -->\ny\n")
    out = tmp_path / "fresh"
    rc = main(
        ["backtest", "--quiet", str(log_file), "--models", "popularity,itemknn", "--freshness-report",
         "--settings", "0,1m,refresh:1h", "--out", str(out), "--update-readme", str(readme)]
    )  # fmt: skip
    assert rc == 0
    data = json.loads((out / "freshness.json").read_text())
    assert [s["label"] for s in data["settings"]] == ["0 s", "1 min", "hourly refresh"]
    hr = data["figures"]["itemknn"]["HR@10"]
    assert len(hr["overall"]) == 3 and set(hr) == {"overall", "none", "1-4", "5+"}
    assert (out / "freshness.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "freshness_by_history.png").exists()
    text = readme.read_text()
    assert "old" not in text and "| `itemknn` |" in text and "--freshness-report" in text
