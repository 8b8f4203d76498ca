"""Reading recorded event logs: JSON lines, CSV, and MovieLens ``u.data``.

Every reader yields validated records (:mod:`streamrec.events`) in file
order. Lines that fail validation are counted in :class:`ReadReport` with
their line number and reason, and skipped (``strict=False``) or raised
(``strict=True``).

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
>>> _ = path.write_text('{"user_id":"u","item_id":"i","timestamp":1}\\nnot json\\n')
>>> report = ReadReport()
>>> [e.item_id for e in read_events(path, report=report)], report.invalid
(['i'], 1)
>>> report.errors[0][:2]
(2, 'not JSON: Expecting value: line 1 column 1 (char 0)')
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.events import (
    DEFAULT_LIMITS,
    Event,
    InvalidEvent,
    ItemUpdate,
    Limits,
    Rating,
    event_from_dict,
    parse_json,
)

__all__ = [
    "FORMATS",
    "ReadReport",
    "detect_format",
    "movielens_events",
    "read_events",
    "read_movielens_items",
    "read_movielens_ratings",
    "read_movielens_users",
]

FORMATS = ("jsonl", "csv", "tsv", "movielens")
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass
class ReadReport:
    """How many lines were read, and which were invalid (line number, reason, first 200 chars)."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    max_errors: int = 100

    def reject(self, line_no: int, reason: str, text: str) -> None:
        self.invalid += 1
        if len(self.errors) < self.max_errors:
            self.errors.append((line_no, reason, text[:200]))


def detect_format(path: str | Path) -> str:
    """Guess a log's format from its name: ``*.data`` -> movielens, ``*.csv`` -> csv, ``*.tsv`` -> tsv, else jsonl."""
    name = Path(path).name.lower()
    if name.endswith(".data") or name == "u.data":
        return "movielens"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    return "jsonl"


#: Column names of tab-separated click logs (session-rec's ``SessionId ItemId Time``) -> event fields.
TSV_COLUMNS = {
    "sessionid": "user_id",
    "userid": "user_id",
    "user_id": "user_id",
    "itemid": "item_id",
    "item_id": "item_id",
    "time": "timestamp",
    "timestamp": "timestamp",
    "event_type": "event_type",
    "rating": "rating",
}


def _infer_kind(obj: object, default: str | None) -> str:
    if isinstance(obj, dict):
        if isinstance(obj.get("kind"), str):
            return obj["kind"]
        if "rating" in obj:
            return "rating"
        if "tags" in obj or "title" in obj:
            return "item"
    return default or "interaction"


def _coerce_csv(row: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in row.items():
        if key is None or value is None or value == "":
            continue
        if key in ("timestamp", "rating"):
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value  # validation reports it
        elif key == "tags":
            out[key] = [t for t in value.split("|") if t]
        else:
            out[key] = value
    return out


def read_events(
    path: str | Path,
    fmt: str | None = None,
    kind: str | None = None,
    strict: bool = False,
    report: ReadReport | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[Event]:
    """Yield the events of a log file in file order.

    Parameters
    ----------
    path
        The file.
    fmt
        ``jsonl``, ``csv``, ``tsv`` (a click log with a header such as session-rec's
        ``SessionId ItemId Time``; each session is a user) or ``movielens``;
        guessed from the name when ``None``.
    kind
        Kind of the events when a line does not say (``"kind"`` field, or a
        ``rating`` / ``tags`` field): ``interaction`` by default.
    strict
        Raise :class:`~streamrec.events.InvalidEvent` on the first invalid line
        instead of skipping it.
    """
    fmt = fmt or detect_format(path)
    report = report if report is not None else ReadReport()
    if fmt == "movielens":
        yield from read_movielens_ratings(path, report=report, strict=strict, limits=limits)
        return
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose one of {FORMATS}")
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            rows = ((n, line, None) for n, line in enumerate(f, start=1) if line.strip())
        elif fmt == "tsv":
            rows = _tsv_rows(f, path)
        else:
            reader = csv.DictReader(f)
            if not reader.fieldnames or (
                not {"user_id", "item_id"} <= set(reader.fieldnames) and "tags" not in reader.fieldnames
            ):
                raise ValueError(
                    f"{path}: a CSV log needs a header with user_id,item_id,timestamp (got {reader.fieldnames})"
                )
            rows = (
                (reader.line_num, ",".join(r.get(k) or "" for k in reader.fieldnames), _coerce_csv(r)) for r in reader
            )
        for line_no, text, parsed in rows:
            report.lines += 1
            try:
                if parsed is None:
                    parsed = parse_json(text)
                event = event_from_dict(parsed, _infer_kind(parsed, kind), limits)  # type: ignore[arg-type]
            except InvalidEvent as exc:
                if strict:
                    raise InvalidEvent(f"{path}:{line_no}: {exc}") from None
                report.reject(line_no, str(exc), text)
                continue
            report.valid += 1
            yield event


def _tsv_rows(f: Any, path: str | Path) -> Iterator[tuple[int, str, dict[str, object]]]:
    """Rows of a tab-separated click log with a header (session-rec: ``SessionId ItemId Time``), as clicks."""
    reader = csv.reader(f, delimiter="\t")
    header = next(reader, None) or []
    names = [TSV_COLUMNS.get(h.strip().lower()) for h in header]
    if "user_id" not in names or "item_id" not in names or "timestamp" not in names:
        raise ValueError(f"{path}: a TSV log needs a header naming the session or user, item and time (got {header})")
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        fields = {name: cell for name, cell in zip(names, row, strict=False) if name is not None}
        parsed = _coerce_csv(fields)
        parsed.setdefault("event_type", "click")
        yield reader.line_num, "\t".join(row), parsed


def read_movielens_ratings(
    path: str | Path,
    report: ReadReport | None = None,
    strict: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    users: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Rating]:
    """Yield MovieLens ``u.data`` lines (user, item, rating, time; tab separated) as ratings, in file order.

    ``users`` (see :func:`read_movielens_users`) maps a user id to the
    features given as each of their ratings' ``context``.
    """
    report = report if report is not None else ReadReport()
    with open(path, encoding="latin-1") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.lines += 1
            parts = line.rstrip("\n").split("\t")
            try:
                if len(parts) != 4:
                    raise InvalidEvent(f"expected 4 tab-separated fields, got {len(parts)}")
                try:
                    rating, ts = float(parts[2]), float(parts[3])
                except ValueError:
                    raise InvalidEvent("rating and timestamp must be numbers") from None
                obj: dict[str, Any] = {"user_id": parts[0], "item_id": parts[1], "rating": rating, "timestamp": ts}
                if users is not None and parts[0] in users:
                    obj["context"] = dict(users[parts[0]])
                event = event_from_dict(obj, "rating", limits)
            except InvalidEvent as exc:
                if strict:
                    raise InvalidEvent(f"{path}:{line_no}: {exc}") from None
                report.reject(line_no, str(exc), line)
                continue
            report.valid += 1
            yield event  # type: ignore[misc]


def read_movielens_items(path: str | Path) -> Iterator[ItemUpdate]:
    """Yield MovieLens ``u.item`` entries as catalogue updates with genre tags."""
    with open(path, encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(MOVIELENS_GENRES):
                continue
            flags = parts[-len(MOVIELENS_GENRES) :]
            tags = tuple(g for g, flag in zip(MOVIELENS_GENRES, flags, strict=True) if flag == "1")
            yield ItemUpdate(item_id=parts[0], timestamp=0.0, title=parts[1], tags=tags)


def read_movielens_users(path: str | Path) -> dict[str, dict[str, Any]]:
    """MovieLens ``u.user`` (id, age, gender, occupation, zip; ``|`` separated) as ``{id: features}``.

    The features are ``{"age": int, "gender": str, "occupation": str}`` (the
    zip code is left out); malformed lines are skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "u.user"
    >>> _ = path.write_text("1|24|M|technician|85711\\nbad line\\n")
    >>> read_movielens_users(path)
    {'1': {'age': 24, 'gender': 'M', 'occupation': 'technician'}}
    """
    users: dict[str, dict[str, Any]] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 4 or not parts[1].strip().isdigit():
                continue
            users[parts[0]] = {"age": int(parts[1]), "gender": parts[2], "occupation": parts[3]}
    return users


def movielens_events(
    folder: str | Path, limit: int | None = None, users: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[list[ItemUpdate], list[Rating]]:
    """MovieLens 100K as the replay order: the ``u.item`` catalogue, and ``u.data`` ratings sorted by time.

    ``limit`` keeps the first ratings only. Each rating carries its user's
    features as ``context``: from ``users`` when given, else from the
    folder's ``u.user`` when it has one.
    """
    folder = Path(folder)
    if users is None and (folder / "u.user").is_file():
        users = read_movielens_users(folder / "u.user")
    items = list(read_movielens_items(folder / "u.item"))
    ratings = sorted(read_movielens_ratings(folder / "u.data", users=users), key=lambda e: e.timestamp)
    return items, ratings if limit is None else ratings[:limit]
