"""Generated data in MovieLens 100K's file format, for tests and demos without the real data set.

MovieLens may not be redistributed, and a fresh machine may have no network,
so the tests that only need *a* rating log shaped like MovieLens (integration
tests, fault tests, replays) run on files written by :func:`write_movielens`:
``u.data`` (``user \\t item \\t rating \\t timestamp``), ``u.item`` (``id|title|
release|video release|url|19 genre flags``) and ``u.user`` (``id|age|gender|
occupation|zip``). The readers in :mod:`streamrec.eventlog` read them as they
read the real set.

The log has what the models learn from and what MovieLens is known for: items
of a few genres each with Zipf-skewed popularity, users who prefer two genres
and rate those items higher, skewed user activity (at least 20 ratings each),
each user rating an item at most once, and ratings that come in bursts after a
user signs up, spread over seven months.

Examples
--------
>>> import tempfile
>>> from streamrec.eventlog import movielens_events
>>> folder = write_movielens(tempfile.mkdtemp(), n_users=30, n_items=60, n_ratings=900, seed=1)
>>> items, ratings = movielens_events(folder)
>>> len(items), len(ratings), len({r.user_id for r in ratings})
(60, 900, 30)
>>> all(1 <= r.rating <= 5 for r in ratings) and items[0].tags != ()
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_movielens"]

GENRES = 19  # MovieLens 100K's genre flags, "unknown" first
OCCUPATIONS = ("engineer", "student", "writer", "educator", "programmer", "artist", "other")
START = 874_724_710.0  # the first timestamp of MovieLens 100K (1997-09-20)
SPAN = 215 * 86_400.0  # about seven months, as in MovieLens 100K


def _user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, n_items: int) -> np.ndarray:
    """Ratings per user: at least 20 (or what fits), a Zipf-like tail, summing to ``n_ratings``."""
    floor = min(20, n_ratings // n_users, n_items)
    if floor == 0:
        raise ValueError(f"{n_ratings} ratings cannot give {n_users} users at least one rating each")
    cap = n_items  # a user rates an item at most once
    weights = 1.0 / np.arange(1, n_users + 1) ** 0.9
    weights = weights[rng.permutation(n_users)]
    counts = np.full(n_users, floor, dtype=np.int64)
    rest = n_ratings - counts.sum()
    while rest > 0:
        room = cap - counts
        w = np.where(room > 0, weights, 0.0)
        if w.sum() == 0:
            raise ValueError(f"{n_ratings} ratings do not fit {n_users} users x {n_items} items")
        extra = np.minimum(rng.multinomial(rest, w / w.sum()), room)
        counts += extra
        rest = n_ratings - counts.sum()
    return counts


def write_movielens(
    folder: str | Path,
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    seed: int = 0,
    taste_strength: float = 0.75,
) -> Path:
    """Write ``u.data``, ``u.item`` and ``u.user`` of a generated MovieLens-like log into ``folder``.

    Parameters
    ----------
    folder
        Created when missing; the three files are (over)written there.
    n_users, n_items, n_ratings
        Size of the log (defaults: those of MovieLens 100K).
    seed
        Every draw comes from it: the same arguments give the same files.
    taste_strength
        Share of a user's ratings that fall in their two favourite genres.

    Returns
    -------
    Path
        ``folder``, ready for :func:`streamrec.eventlog.movielens_events`.
    """
    if min(n_users, n_items, n_ratings) <= 0:
        raise ValueError("n_users, n_items and n_ratings must be positive")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # items: one or two genres (never "unknown"), Zipf popularity, a quality that shifts ratings
    genre = rng.integers(1, GENRES, n_items)
    second = np.where(rng.random(n_items) < 0.4, rng.integers(1, GENRES, n_items), genre)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.0
    popularity = popularity[rng.permutation(n_items)]
    quality = rng.normal(0.0, 0.6, n_items)
    by_genre = [np.flatnonzero((genre == g) | (second == g)) for g in range(GENRES)]

    counts = _user_counts(rng, n_users, n_ratings, n_items)
    favourites = rng.integers(1, GENRES, (n_users, 2))
    signup = np.sort(rng.uniform(START, START + SPAN * 0.9, n_users))
    rows: list[np.ndarray] = []
    for user in range(n_users):
        n = int(counts[user])
        pool = np.unique(np.concatenate([by_genre[g] for g in favourites[user]]))
        n_taste = min(round(n * taste_strength), len(pool))
        p = popularity[pool] / popularity[pool].sum()
        liked = rng.choice(pool, size=n_taste, replace=False, p=p) if n_taste else np.empty(0, dtype=np.int64)
        others = np.setdiff1d(np.arange(n_items), liked, assume_unique=True)
        p = popularity[others] / popularity[others].sum()
        rest = rng.choice(others, size=n - n_taste, replace=False, p=p)
        items = np.concatenate([liked, rest])
        fits = np.isin(genre[items], favourites[user]) | np.isin(second[items], favourites[user])
        score = 2.6 + 1.3 * fits + quality[items] + rng.normal(0.0, 0.7, n)
        ratings = np.clip(np.rint(score), 1, 5).astype(np.int64)
        # most ratings in a first session after signing up, some in later visits
        gaps = rng.exponential(40.0, n)
        later = rng.random(n) < 0.2
        gaps[later] += rng.exponential(SPAN / 6, int(later.sum()))
        times = np.minimum(signup[user] + np.cumsum(gaps[rng.permutation(n)]), START + SPAN)
        order = rng.permutation(n)
        rows.append(np.column_stack([np.full(n, user + 1), items[order] + 1, ratings[order], times.astype(np.int64)]))
    data = np.concatenate(rows)
    data = data[rng.permutation(len(data))]  # u.data is not in time order either
    np.savetxt(folder / "u.data", data, fmt="%d", delimiter="\t")

    with open(folder / "u.item", "w", encoding="latin-1") as f:
        for item in range(n_items):
            flags = ["0"] * GENRES
            flags[genre[item]] = flags[second[item]] = "1"
            year = 1930 + int(rng.integers(0, 68))
            f.write(f"{item + 1}|Generated Film {item + 1} ({year})|01-Jan-{year}||http://example.org/{item + 1}|")
            f.write("|".join(flags) + "\n")
    with open(folder / "u.user", "w", encoding="latin-1") as f:
        for user in range(n_users):
            age = int(rng.integers(7, 74))
            gender = "MF"[int(rng.integers(0, 2))]
            occupation = OCCUPATIONS[int(rng.integers(0, len(OCCUPATIONS)))]
            f.write(f"{user + 1}|{age}|{gender}|{occupation}|{int(rng.integers(10_000, 99_999))}\n")
    return folder
