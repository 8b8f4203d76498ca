"""``streamrec backtest`` end to end on a small generated log."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

import models
from producers.synthetic import SyntheticStream
from streamrec.cli import main
from streamrec.events import Rating, encode


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """1,500 synthetic interactions and 300 ratings, as JSON lines (not in time order)."""
    events: list[Any] = list(SyntheticStream(n_users=60, n_items=120, seed=4).events(1500))
    events += [Rating(f"u{j % 40}", f"i{j % 90}", float(1 + j % 5), events[0].timestamp + j) for j in range(300)]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(encode(e) for e in reversed(events)) + b"\n")
    return path


def backtest(*args: str) -> int:
    return main(["backtest", "--quiet", *args])


def without_timings(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data.pop("harness")
    data["config"] = {k: v for k, v in data["config"].items() if k != "command"}
    data["models"] = {
        n: {k: v for k, v in m.items() if k not in ("timing", "memory")} for n, m in data["models"].items()
    }
    return data


def test_cli_writes_json_markdown_and_plots(log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    names = "popularity,itemknn,isgd,river_biased_mf"
    rating = (
        '{"river_biased_mf": {"target": "rating"}}'  # the factorisation models rank picks; this one predicts ratings
    )
    rc = backtest(
        str(log_file),
        *("--models", names, "--params", rating, "--k", "5,10", "--window", "400", "--memory-events", "300"),
        *("--out", str(out)),
    )
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert list(data["models"]) == names.split(",")
    assert data["stream"]["events"] == 1800 and data["config"]["ks"] == [5, 10]
    assert data["config"]["seed"] == 0 and data["config"]["freshness_s"] == 0.0 and data["config"]["refresh_s"] is None
    assert data["machine"]["cpu_count"] >= 1
    for name, m in data["models"].items():
        assert m["error"] is None
        assert 0.0 <= m["overall"]["HR@5"] <= m["overall"]["HR@10"] <= 1.0
        assert len(m["windows"]) == len(data["windows"]) == 5
        assert m["timing"]["events_per_s"] > 0
        assert m["memory"]["state_bytes"] > 0 and m["memory"]["peak_traced_bytes"] > 0
        assert ("RMSE" in m["overall"]) == (name == "river_biased_mf")
    for png in ["hr_at_5", "hr_at_10", "ndcg_at_10", "mrr", "coverage_at_10", "rmse", "mae", "events_per_s"]:
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| `itemknn` |" in md and "![hr_at_10](hr_at_10.png)" in md
    assert "Reproduce: `streamrec backtest" in md
    assert "| `popularity` |" in capsys.readouterr().out


def test_cli_is_deterministic_with_a_seed(log_file: Path, tmp_path: Path) -> None:
    common = [
        str(log_file),
        "--models",
        "isgd,river_funk_mf",
        "--seed",
        "3",
        "--batch-size",
        "100",
        "--memory",
        "state",
    ]
    assert backtest(*common, "--out", str(tmp_path / "a")) == 0
    assert backtest(*common, "--out", str(tmp_path / "b")) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert without_timings(a) == without_timings(b)
    assert backtest(*common[:-4], "--seed", "4", "--out", str(tmp_path / "c")) == 0
    c = json.loads((tmp_path / "c" / "results.json").read_text())
    assert c["models"]["isgd"]["overall"] != a["models"]["isgd"]["overall"]


def test_cli_updates_the_readme_section(log_file: Path, tmp_path: Path) -> None:
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_text("# Title\n\nbefore\n<!-- backtest:start -->\nold table\n<!-- backtest:end -->\nafter\n")
    out = tmp_path / "results"
    args = [
        str(log_file),
        "--models",
        "popularity",
        "--memory",
        "off",
        "--out",
        str(out),
        "--update-readme",
        str(readme),
    ]
    assert backtest(*args) == 0
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# Title\n\nbefore\n<!-- backtest:start -->\n| Model |")
    assert text.endswith("<!-- backtest:end -->\nafter\n")
    assert "![hr_at_10](../results/hr_at_10.png)" in text
    assert backtest(*args) == 0
    assert readme.read_text().count("| Model |") == 2  # the table and its split by history, once


def test_cli_readme_without_markers_is_an_error(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# nothing to replace\n")
    args = [str(log_file), "--models", "popularity", "--no-plots", "--memory", "off", "--out", str(tmp_path / "o")]
    assert backtest(*args, "--update-readme", str(readme)) == 2
    assert "lacks the markers" in capsys.readouterr().err


def test_a_model_that_fails_to_import_does_not_stop_the_others(
    log_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(models.MODEL_PATHS, "broken", "tests.backtest.no_such_module:Nothing")
    out = tmp_path / "out"
    assert (
        backtest(str(log_file), "--models", "broken,popularity", "--memory", "off", "--no-plots", "--out", str(out))
        == 1
    )
    data = json.loads((out / "results.json").read_text())
    assert "ModuleNotFoundError" in data["models"]["broken"]["error"]
    assert data["models"]["popularity"]["error"] is None and data["models"]["popularity"]["overall"]["HR@10"] > 0
    assert "model broken: could not create" in capsys.readouterr().err
    assert "failed: could not create" in (out / "results.md").read_text()


def test_cli_options_are_checked(log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "o")]
    assert backtest(str(log_file), "--models", "nope", *out) == 2
    assert "unknown model(s) nope" in capsys.readouterr().err
    assert backtest(*out) == 2
    assert "give exactly one source" in capsys.readouterr().err
    assert backtest(str(log_file), "--positives", "like", *out) == 2
    assert backtest(str(log_file), "--params", "{bad", *out) == 2
    with pytest.raises(SystemExit):
        backtest(str(log_file), "--k", "0", *out)


def test_cli_replay_options(log_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = [str(log_file), "--models", "popularity", "--memory", "off", "--no-plots", "--out", str(out)]
    opts = ["--warmup", "0.5", "--every", "2", "--positives", "purchase,rating", "--min-rating", "4"]
    assert backtest(*args, *opts, "--freshness", "30s", "--learn-batch", "50", "--limit", "1000") == 0
    data = json.loads((out / "results.json").read_text())
    config = data["config"]
    assert (config["warmup"], config["every"], config["freshness_s"], config["learn_batch"]) == (0.5, 2, 30.0, 50)
    assert config["positives"] == ["purchase", "rating"] and config["min_rating"] == 4.0
    assert data["stream"]["events"] == 1000
    assert 0 < data["stream"]["scored"] < 250


def test_the_reproduce_line_reruns_to_the_same_figures(
    log_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    options = ["--models", "popularity,itemknn", "--fallback", "none", "--k", "5", "--every", "3"]
    assert backtest(str(log_file), *options, "--refresh", "90s", "--learn-batch", "64", "--out", "first") == 0
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    line = first["config"]["command"]
    assert str(tmp_path) not in line  # files named relative to where it ran
    argv = shlex.split(line)
    assert argv[:2] == ["streamrec", "backtest"]
    for flag in ("--fallback", "--refresh", "--learn-batch", "--k", "--every", "--models", "--seed"):
        assert flag in argv, f"{flag} missing from {line}"
    argv[argv.index("--out") + 1] = "second"
    assert main([*argv[1:], "--quiet"]) == 0
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert without_timings(second)["models"] == without_timings(first)["models"]
    assert second["models"]["itemknn"]["overall"]["HR@5"] > 0
