"""Reading JSON-lines, CSV and MovieLens logs."""

from __future__ import annotations

import pytest

from streamrec.eventlog import (
    ReadReport,
    detect_format,
    movielens_events,
    read_events,
    read_movielens_items,
    read_movielens_ratings,
    read_movielens_users,
)
from streamrec.events import Interaction, InvalidEvent, ItemUpdate, Rating


def test_jsonl_mixed_kinds_and_bad_lines(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"user_id":"u1","item_id":"a","timestamp":1,"event_type":"click"}\n'
        '{"user_id":"u1","item_id":"b","timestamp":2,"rating":4}\n'
        "\n"
        '{"item_id":"c","timestamp":3,"tags":["x"],"title":"C"}\n'
        '{"user_id":"","item_id":"b","timestamp":2}\n'
        "garbage\n"
    )
    report = ReadReport()
    events = list(read_events(path, report=report))
    assert [type(e) for e in events] == [Interaction, Rating, ItemUpdate]
    assert (report.lines, report.valid, report.invalid) == (5, 3, 2)
    assert [e[0] for e in report.errors] == [5, 6]
    assert "user_id: empty" in report.errors[0][1]
    with pytest.raises(InvalidEvent, match=r"events.jsonl:5: user_id: empty"):
        list(read_events(path, strict=True))


def test_csv_interactions_and_ratings(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp,event_type\nu1,a,10,view\nu2,b,11,purchase\nu3,c,oops,view\n")
    report = ReadReport()
    events = list(read_events(path, report=report))
    assert [(e.user_id, e.event_type) for e in events] == [("u1", "view"), ("u2", "purchase")]
    assert report.invalid == 1 and "timestamp" in report.errors[0][1]
    rated = tmp_path / "ratings.csv"
    rated.write_text("user_id,item_id,rating,timestamp\nu1,a,4.5,10\n")
    assert list(read_events(rated)) == [Rating("u1", "a", 4.5, 10.0)]


def test_csv_without_ids_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("who,what\n1,2\n")
    with pytest.raises(ValueError, match="needs a header"):
        list(read_events(path))


def test_movielens_format(tmp_path) -> None:
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\nbad line\n22\t377\t9\t878887116\n")
    assert detect_format(path) == "movielens"
    report = ReadReport()
    events = list(read_events(path, report=report))
    assert events == [Rating("196", "242", 3.0, 881250949.0), Rating("186", "302", 3.0, 891717742.0)]
    assert report.invalid == 2
    item = tmp_path / "u.item"
    item.write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n", encoding="latin-1"
    )
    assert list(read_movielens_items(item)) == [
        ItemUpdate("1", 0.0, "Toy Story (1995)", ("Animation", "Children's", "Comedy"))
    ]


def test_movielens_user_features_become_the_ratings_context(tmp_path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t5\t881250950\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n3|53|F|other|94043\n")
    (tmp_path / "u.item").write_text("10|Heat (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n")
    users = read_movielens_users(tmp_path / "u.user")
    assert users["1"] == {"age": 24, "gender": "M", "occupation": "technician"}
    ratings = list(read_movielens_ratings(tmp_path / "u.data", users=users))
    assert ratings[0].context == users["1"] and ratings[0].context is not users["1"]
    assert ratings[1].context is None  # user 2 has no line in u.user
    assert [r.context for r in read_movielens_ratings(tmp_path / "u.data")] == [None, None]
    _, events = movielens_events(tmp_path)  # u.user is read when the folder has it
    assert events[0].context == users["1"]
    (tmp_path / "u.user").unlink()
    assert movielens_events(tmp_path)[1][0].context is None


def test_hostile_json_lines_are_rejected_not_raised(tmp_path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_text(
        "[" * 100_000 + "]" * 100_000 + "\n"  # nesting deeper than the parser's recursion limit
        '{"user_id":"u","item_id":"i","timestamp":NaN}\n'
        '{"user_id":"u","item_id":"i","timestamp":1}\n'
    )
    report = ReadReport()
    events = list(read_events(path, report=report))
    assert [e.item_id for e in events] == ["i"]
    assert report.invalid == 2
    assert all(reason.startswith("not JSON") for _, reason, _ in report.errors)


def test_tab_separated_click_logs_with_a_session_rec_header(tmp_path) -> None:
    path = tmp_path / "clicks.tsv"
    path.write_text(
        "SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n1\t214536506\t1396860886.998\n\n2\tx\tnope\n"
    )
    report = ReadReport()
    events = list(read_events(path, report=report))
    assert [(e.user_id, e.item_id, e.event_type) for e in events] == [
        ("1", "214536502", "click"),
        ("1", "214536506", "click"),
    ]
    assert events[0].timestamp == 1396860669.277
    assert report.invalid == 1 and "timestamp" in report.errors[0][1]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="header"):
        list(read_events(bad))
