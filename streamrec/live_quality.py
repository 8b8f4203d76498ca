"""Live quality per model, from the stream alone: was each event's item in the list last served to its user?

The worker writes, after every micro-batch, a list per model for each user the
batch touched. :class:`LiveQuality` remembers those lists (their first
``max(ks)`` items) and, for every incoming event, **before it is learned**,
looks up the event's item in the user's last list under each model; a user
without a list under a model is scored against the fallback list, which is
what a reader gets for them. That is the prequential protocol of
``streamrec backtest`` (:mod:`streamrec.backtest.prequential`) with the
freshness the live system actually has: an event is scored against the list
written after the batches before its own.

What it counts, per model and per history bucket (``none``, ``1-4``, ``5+``:
how many of the user's own events the scored list reflects), as a flat mapping
of ``"model|bucket|field"`` to a number, so that several workers' counts add
up (the worker adds them to Redis hashes, one per minute, and to Prometheus
counters):

- ``scored``: events scored;
- ``hit@K``: events whose item was in the first ``K`` items;
- ``rr``: the sum of ``1 / (rank + 1)`` (0 when absent), for MRR;
- ``rr2``: the sum of its squares, for MRR's confidence interval.

Users whose list under a model this worker does not hold although they have
history (their partition moved here, or they were evicted from the bounded
memory of lists) are not scored; they are counted as ``"model|-|unknown"``.

Examples
--------
>>> from models import Recommendations
>>> from streamrec.events import Interaction
>>> live = LiveQuality(["itemknn"], ks=(1, 2))
>>> live.score([Interaction("u", "a", 1.0)], has_history=lambda u: False)  # no list yet: the fallback, empty
{'itemknn|none|scored': 1.0}
>>> live.served({"itemknn": Recommendations(["u"], [["b", "c"]], [[2.0, 1.0]])}, fallback=["a", "b"])
>>> counts = live.score([Interaction("u", "c", 2.0), Interaction("w", "a", 2.0)], has_history=lambda u: u == "u")
>>> summary = summarise(counts, ks=(1, 2))
>>> summary["itemknn"]["1-4"]["HR@2"], summary["itemknn"]["none"]["HR@1"], summary["itemknn"]["all"]["MRR"]
(1.0, 1.0, 0.75)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from models import Recommendations
from streamrec.events import Event, ForgetUser, Interaction, Rating

if TYPE_CHECKING:
    from streamrec.experiments import Experiment

__all__ = ["BUCKETS", "LiveQuality", "bucket_of", "proportion_interval", "summarise"]

#: History buckets, as in the backtest: how many of the user's own events the scored list reflects.
BUCKETS: tuple[tuple[str, int, float], ...] = (("none", 0, 0), ("1-4", 1, 4), ("5+", 5, math.inf))


def bucket_of(history: int) -> str:
    """The bucket of a list that reflects ``history`` events of its user.

    >>> bucket_of(0), bucket_of(4), bucket_of(5)
    ('none', '1-4', '5+')
    """
    for label, lo, hi in BUCKETS:
        if lo <= history <= hi:
            return label
    return BUCKETS[-1][0]


class LiveQuality:
    """Scores events against the lists last served, per model; remembers the lists the worker writes.

    Parameters
    ----------
    models
        Names of the models whose lists are written per user.
    ks
        Cut-offs of HR@K; the lists are remembered to ``max(ks)`` items (MRR is within that length).
    max_users
        Users whose lists are remembered; beyond, the least recently served are forgotten (their next
        event counts as ``unknown``, not as a miss).
    """

    def __init__(
        self,
        models: Sequence[str],
        ks: Sequence[int] = (10, 20),
        max_users: int = 200_000,
        experiment: Experiment | None = None,
    ) -> None:
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {ks!r}")
        self.experiment = experiment
        interleaved = [v.name for v in experiment.variants if v.interleaved] if experiment is not None else []
        #: the lists scored: every model's, then each interleaved variant's own (scored for its users only)
        self.models = (*models, *interleaved)
        self._plain = len(models)
        self._column = {name: j for j, name in enumerate(self.models)}
        #: user -> the team (0: first model, 1: second) of each item of their interleaved list
        self._teams: dict[str, tuple[int, ...]] = {}
        self.ks = tuple(sorted(set(ks)))
        self.depth = self.ks[-1]
        self.max_users = max_users
        #: user -> (events of the user the lists reflect, one list per model (``None``: no list under it))
        self._lists: dict[str, tuple[int, tuple[tuple[str, ...] | None, ...]]] = {}
        #: user -> events of the user learned so far (by this worker)
        self._history: dict[str, int] = {}
        self._fallback: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self._lists)

    def score(self, events: Iterable[Event], has_history: Callable[[str], bool]) -> dict[str, float]:
        """Score ``events`` (in arrival order, before they are learned) against the lists last served.

        ``has_history(user)`` says whether the models know the user: a user they know whose lists this
        object does not hold is counted ``unknown`` instead of being scored against the fallback.
        Every :class:`~streamrec.events.Interaction` (not negative feedback) and
        :class:`~streamrec.events.Rating` is scored; a :class:`~streamrec.events.ForgetUser` forgets the
        user's lists for the events after it.
        """
        acc: dict[tuple[str, str], list[float]] = {}  # (list, bucket) -> [scored, hits per K..., rr, rr2]
        width = len(self.ks) + 3
        ks = self.ks
        fallback = self._fallback
        unknown: set[str] = set()
        experiment = self.experiment
        models = self.models
        plain = self._plain

        def bump(name: str, bucket: str, rank: int) -> None:
            row = acc.get((name, bucket))
            if row is None:
                row = acc[(name, bucket)] = [0.0] * width
            row[0] += 1
            if rank >= 0:
                for j, k in enumerate(ks):
                    if rank < k:
                        row[1 + j] += 1
                rr = 1.0 / (rank + 1)
                row[-2] += rr
                row[-1] += rr * rr

        unknown_counts = 0
        for event in events:
            if isinstance(event, ForgetUser):
                self.forget(event.user_id)
                continue
            if isinstance(event, Interaction) and event.is_feedback:
                continue
            if not isinstance(event, Interaction | Rating):
                continue
            user, item = event.user_id, event.item_id
            entry = self._lists.get(user)
            before = self._history.get(user, 0)
            self._history[user] = before + 1
            if entry is None:
                if user in unknown or (before == 0 and has_history(user)):  # learned elsewhere: no lists here
                    unknown.add(user)
                    unknown_counts += 1
                    continue
                history, lists = 0, (None,) * len(models)
            else:
                history, lists = entry
            bucket = "none" if history == 0 else "1-4" if history <= 4 else "5+"
            variant = experiment.assign(user) if experiment is not None else None
            ranks = []
            for column, items in enumerate(lists):
                if column >= plain and variant is not None and variant.name != models[column]:
                    ranks.append(-1)  # another variant's interleaved list: this user is never served it
                    continue
                served = fallback if items is None else items
                rank = served.index(item) if item in served else -1
                ranks.append(rank)
                bump(models[column], bucket, rank)
            if variant is not None:
                column = self._column[variant.name if variant.interleaved else variant.models[0]]
                bump(f"exp:{variant.name}", bucket, ranks[column])
                if variant.interleaved and 0 <= ranks[column] < self.depth and entry is not None:
                    teams = self._teams.get(user) if lists[column] is not None else None
                    if teams is not None and ranks[column] < len(teams):
                        key = (f"exp:{variant.name}", f"win:{variant.models[teams[ranks[column]]]}")
                        acc.setdefault(key, [0.0])[0] += 1
        counts: dict[str, float] = {}
        if unknown_counts:
            for model in models:
                counts[f"{model}|-|unknown"] = float(unknown_counts)
        fields = ["scored", *[f"hit@{k}" for k in ks], "rr", "rr2"]
        for (name, bucket), row in acc.items():
            if bucket.startswith("win:"):
                counts[f"{name}|-|{bucket}"] = row[0]
                continue
            for what, value in zip(fields, row, strict=True):
                if value:
                    counts[f"{name}|{bucket}|{what}"] = value
        return counts

    def served(self, lists: Mapping[str, Recommendations], fallback: Sequence[str] | None = None) -> None:
        """Remember the lists just written (per model, for the users they hold) and the fallback list."""
        if fallback is not None:
            self._fallback = tuple(fallback[: self.depth])
        by_user: dict[str, list[tuple[str, ...] | None]] = {}
        for position, model in enumerate(self.models):
            recs = lists.get(model)
            if recs is None:
                continue
            for user, items in zip(recs.users, recs.items, strict=True):
                row = by_user.get(user)
                if row is None:
                    previous = self._lists.get(user)
                    row = by_user[user] = list(previous[1]) if previous is not None else [None] * len(self.models)
                row[position] = tuple(items[: self.depth])
        for user, row in by_user.items():
            self._lists.pop(user, None)  # re-inserted last: the dict's order is the order of use
            self._lists[user] = (self._history.get(user, 0), tuple(row))
        excess = len(self._lists) - self.max_users
        if excess > 0:
            for user in list(self._lists)[:excess]:
                del self._lists[user]
                self._history.pop(user, None)
        if len(self._history) > 2 * self.max_users:  # users scored but never served (a failing model)
            for user in [u for u in self._history if u not in self._lists][: len(self._history) - self.max_users]:
                del self._history[user]

    @property
    def has_fallback(self) -> bool:
        return bool(self._fallback)

    def missing(self, users: Iterable[str], has_history: Callable[[str], bool]) -> list[str]:
        """Users the models know whose lists are not held here (moved from another worker, or evicted)."""
        return [u for u in dict.fromkeys(users) if u not in self._lists and has_history(u)]

    def restore(
        self,
        lists: Mapping[str, Mapping[str, Sequence[str]]],
        history: Callable[[str], int],
        fallback: Sequence[str] = (),
    ) -> None:
        """Take the lists last served as Redis holds them (user -> list name -> items) for users not held here."""
        if fallback and not self._fallback:
            self._fallback = tuple(fallback[: self.depth])
        for user, by_name in lists.items():
            if user in self._lists or not by_name:
                continue
            row = tuple(tuple(by_name[name][: self.depth]) if name in by_name else None for name in self.models)
            self._history[user] = count = history(user)
            self._lists[user] = (count, row)

    def teams_served(self, teams: Mapping[str, Mapping[str, Sequence[int]]]) -> None:
        """Remember, per interleaved variant and user, which model contributed each item of the list written."""
        for by_user in teams.values():
            for user, row in by_user.items():
                self._teams[user] = tuple(row[: self.depth])
        if len(self._teams) > self.max_users:
            for user in [u for u in self._teams if u not in self._lists][: len(self._teams) - self.max_users]:
                del self._teams[user]

    def forget(self, user: str) -> None:
        """Drop what is remembered of ``user`` (a privacy request, or a user moved to another worker)."""
        self._lists.pop(user, None)
        self._history.pop(user, None)
        self._teams.pop(user, None)


def proportion_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); ``(0, 1)`` without trials.

    >>> low, high = proportion_interval(50, 100)
    >>> round(low, 3), round(high, 3)
    (0.404, 0.596)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(counts: Mapping[str, float], ks: Sequence[int] = (10, 20)) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and bucket (and ``all``): events scored, HR@K with 95% intervals, MRR with its interval.

    ``counts`` are added :meth:`LiveQuality.score` outputs (from one worker, or summed over several and
    over any window of minutes).
    """
    totals: dict[str, dict[str, Counter[str]]] = {}
    for name, value in counts.items():
        try:
            model, bucket, what = name.split("|")
        except ValueError:
            continue
        per_model = totals.setdefault(model, {})
        per_model.setdefault(bucket, Counter())[what] += value
        if bucket != "-":
            per_model.setdefault("all", Counter())[what] += value
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, buckets in totals.items():
        out[model] = {}
        for bucket, c in buckets.items():
            if bucket == "-":  # not per bucket: users whose lists were not here, interleaving wins
                out[model]["-"] = dict(c)
                continue
            n = c["scored"]
            figures: dict[str, Any] = {"scored": n}
            for k in ks:
                hits = c[f"hit@{k}"]
                figures[f"HR@{k}"] = hits / n if n else 0.0
                figures[f"HR@{k}_ci"] = proportion_interval(hits, n)
            mean = c["rr"] / n if n else 0.0
            variance = max(0.0, c["rr2"] / n - mean * mean) if n else 0.0
            half = 1.96 * math.sqrt(variance / n) if n > 1 else 0.0
            figures["MRR"] = mean
            figures["MRR_ci"] = (max(0.0, mean - half), mean + half)
            out[model][bucket] = figures
    return out
