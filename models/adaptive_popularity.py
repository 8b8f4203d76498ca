"""Popularity that chooses its time decay online, from its own prequential hits: the fallback list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from models.base import Interactions, OnlineRecommender
from models.popularity import Popularity, _one_anchor
from models.ranking import top_k_row, top_k_row_by

__all__ = ["AdaptivePopularity"]

DAY = 24 * 3600.0
#: Decays the default model chooses among: half-lives of a week, none (counts), an hour, a day, a month.
#: A week first: the single decay used before, served until another has hit more.
DEFAULT_HALF_LIVES: tuple[float | None, ...] = (7 * DAY, None, 3600.0, DAY, 30 * DAY)
#: Decays of the arms that count only newcomers' events (what people take first differs from what regulars take).
DEFAULT_NEWCOMER_HALF_LIVES: tuple[float | None, ...] = (7 * DAY, None, DAY, 3600.0)
_ARM_ARRAY = re.compile(r"_acc(\d+)")


class _Arm(Popularity):
    """One candidate decay: a :class:`Popularity` that uses its owner's id indices and clock."""

    def __init__(
        self, owner: AdaptivePopularity, slot: int, half_life: float | None, per_user: str, newcomers_only: bool = False
    ) -> None:
        self._owner = owner
        self._slot = slot
        self.newcomers_only = newcomers_only
        super().__init__(half_life=half_life, per_user=per_user)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """The arm's name in :meth:`AdaptivePopularity.hit_rates`: ``"7d"``, or ``"new 7d"`` for a newcomers' arm."""
        return f"new {_label(self.half_life)}" if self.newcomers_only else _label(self.half_life)

    # the owner indexes ids, keeps seen items and the clock; the arm keeps its scores only
    user_index = property(lambda self: self._owner.user_index, lambda self, value: None)  # type: ignore[assignment]
    item_index = property(lambda self: self._owner.item_index, lambda self, value: None)  # type: ignore[assignment]
    last_timestamp = property(lambda self: self._owner.last_timestamp, lambda self, value: None)  # type: ignore[assignment]

    @property
    def _shared_base(self) -> dict[str, np.ndarray] | None:  # type: ignore[override]
        """The owner's delta base of this arm's scores, so that a rescale moves it too."""
        base = getattr(self._owner, "_shared_base", None)
        return None if base is None else {"_acc": base[f"_acc{self._slot}"]}

    def top_rows(self, k: int) -> np.ndarray:
        """Rows of the ``k`` best-scored items, best first (ties in any order): what this arm would serve."""
        m = min(k, self._owner.item_index.n_live)
        if m <= 0:
            return np.zeros(0, dtype=np.int64)
        top = self._global_top(m)
        if top is not None:
            return top[0]
        scores = self.item_scores()
        if self.item_index.n_free:
            scores[self.item_index.free_rows()] = -np.inf
        return top_k_row(scores, min(m, len(scores)))[0]

    def judged_rows(self, k: int) -> list[int]:
        """The rows of this arm's top ``k``, best first, ties to the lower row; kept between events.

        Judging asks for it at every event, so it is kept and mended as scores grow (only the rows
        an event raised can enter, and an arm's order does not change as its scores decay alike);
        anything that may lower a score clears it. Rows of items without a score may fill it.
        """
        if self._judged_top is None or self._judged_k != k:
            scores = self._acc[: self.n_items].copy()
            if self.item_index.n_free:
                scores[self.item_index.free_rows()] = -np.inf
            m = min(k, self._owner.item_index.n_live)
            top = top_k_row_by(scores, np.arange(len(scores)), m)[0].tolist() if m > 0 else []
            self._keep_judged(top, k)
        return self._judged_top  # type: ignore[return-value]

    def _keep_judged(self, top: list[int], k: int) -> None:
        """Keep ``top`` (ordered) and its last member's score and row: no row below them can enter it."""
        self._judged_top, self._judged_k = top, k
        self._judged_floor = (float(self._acc[top[-1]]), top[-1]) if len(top) == k else None

    def _mend_judged(self, rows: np.ndarray) -> None:
        top, floor = self._judged_top, self._judged_floor
        if top is None:
            return
        if floor is None:  # fewer live items than k until now: rebuilt from the whole catalogue
            self._judged_top = None
            return
        # scores only grow, so every member is still at least at the floor kept when the list was
        # ordered: a row below it cannot enter, and only the rows an event raised may have moved
        acc, (value, row) = self._acc, floor
        if len(rows) == 1:
            r = int(rows[0])
            if r not in top and (acc[r] < value or (acc[r] == value and r > row)):
                return
            raised = [r]
        else:
            values = acc[rows]
            raised = np.unique(rows[(values > value) | ((values == value) & (rows < row))]).tolist()
            if not raised and not np.isin(rows, top).any():
                return
        candidates = np.array(sorted(set(top).union(raised)), dtype=np.int64)
        order = np.lexsort((candidates, -acc[candidates]))[: self._judged_k]
        self._keep_judged(candidates[order].tolist(), self._judged_k)

    def _top_raised(self, rows: np.ndarray) -> None:
        super()._top_raised(rows)
        self._mend_judged(rows)

    def _top_forget(self) -> None:
        super()._top_forget()
        self._judged_top = None

    def _rescale(self, shift: float) -> None:
        super()._rescale(shift)
        self._judged_top = None  # the order stays, but rounding may make ties

    def _init_state(self) -> None:
        super()._init_state()
        self._judged_top: list[int] | None = None
        self._judged_k = 0
        self._judged_floor: tuple[float, int] | None = None

    def in_frame(self, values: np.ndarray, theirs: float | None, absolute: bool) -> np.ndarray:
        """Another worker's scores for this arm, brought to this arm's anchor (as :class:`Popularity` does)."""
        if self.half_life is None or theirs is None:
            return values
        if self._anchor is None or absolute:
            self._anchor = theirs
            return values
        if theirs > self._anchor:  # move to the newer anchor first: scaling their scores up could overflow
            self._rescale((theirs - self._anchor) / self.half_life)
        return values * 2.0 ** ((theirs - self._anchor) / self.half_life)


class AdaptivePopularity(OnlineRecommender):
    """Popularity under several time decays at once, serving the one whose lists hit most.

    Each candidate ("arm") is a :class:`~models.popularity.Popularity` with its
    own half-life (``None``: plain counts). Before a batch is learned, each of
    its judged events (by default those of users with little history, like
    the users the fallback serves) is scored prequentially: a hit for an arm when the event's item
    is in that arm's top ``k`` (every item eligible, as in the list served to
    a user without history). Each arm's hits are kept as an exponentially
    weighted sum (each event multiplies the sums by ``1 - 1 / memory``), and
    the model serves the arm with the largest sum (the first listed on a tie,
    so before any hit the first arm). Within a micro-batch every event is
    judged against the state before the batch, so learning a batch differs
    from learning its events one by one.

    Which decay wins depends on the log: on a log whose items rise and fade
    within hours a short half-life; on one whose popular items stay popular,
    counts. The choice follows the log as it changes; :attr:`chosen` and
    :meth:`hit_rates` say what it chose and why.

    Several workers: every arm's scores are shared as increments, exactly as
    :class:`Popularity` shares them; each worker judges its own events and
    sends the hits it counted since its last delta, which the others add, so
    the workers see about the same sums (not exactly: a worker's judgement is
    made against its own view, and sums decay by each worker's own events).

    Parameters
    ----------
    half_lives
        The candidate decays in seconds (``None``: no decay), at least one; the first wins ties.
    k
        Length of the list an event is judged against.
    memory
        Events over which hits are weighted (the sums' time constant); ``None``: plain sums.
    judge
        Only the events of users with fewer than ``judge`` distinct earlier items are judged
        (``1``: users without history, whom the fallback serves; the default ``3`` adds their
        next events, which look like them and are more); ``None``: every event. Earlier
        events of the same micro-batch count, as in ``newcomers``.
    reward
        ``"hit"``: an event counts 1 for an arm whose list holds its item; ``"ndcg"``:
        ``1 / log2(rank + 2)``.
    per_user
        As :class:`Popularity`: ``"max"`` counts a user once per item, ``"sum"`` every event.
    newcomer_half_lives
        Decays of further arms that count only the events of newcomers (users with fewer than
        ``newcomers`` distinct earlier items): what people take first often differs from what
        regulars take (a shop's landing pages, a sign-up page's films). Judged like the others;
        ``()``: none.
    newcomers
        The history below which a user's events count in the newcomers' arms.
    seed
        Unused (deterministic); kept for a uniform signature.

    Examples
    --------
    A log whose most popular item changes within hours: judged on lists of one item, the
    hour-long half-life wins.

    >>> users = [f"u{j}" for j in range(400)]
    >>> items = ["old"] * 200 + ["new"] * 40 + ["old"] * 10 + ["new"] * 150
    >>> times = [float(j * 60) for j in range(400)]
    >>> model = AdaptivePopularity(half_lives=(None, 3600.0), k=1, memory=100, judge=None)
    >>> for j in range(0, 400, 10):
    ...     model.learn(Interactions.from_columns(users[j:j + 10], items[j:j + 10], timestamps=times[j:j + 10]))
    >>> model.chosen, model.recommend(["newcomer"], k=2).items
    (3600.0, [['new', 'old']])
    """

    name: ClassVar[str] = "adaptive_popularity"
    personalized: ClassVar[bool] = False
    batch_equals_sequential: ClassVar[bool] = False
    shares_state: ClassVar[bool] = True
    sharing_is_exact: ClassVar[bool] = False  # the scores are exact; the choice is made from each worker's view
    item_changes_tracked: ClassVar[bool] = True
    merges_item_deltas: ClassVar[bool] = True
    _frame_keys: ClassVar[tuple[str, ...]] = ("last_timestamp", "anchors")
    _nonnegative_item_arrays: ClassVar[bool] = True

    def __init__(
        self,
        half_lives: Sequence[float | None] = DEFAULT_HALF_LIVES,
        k: int = 10,
        memory: int | None = 2000,
        judge: int | None = 3,
        reward: Literal["hit", "ndcg"] = "hit",
        per_user: Literal["max", "sum"] = "max",
        newcomer_half_lives: Sequence[float | None] = DEFAULT_NEWCOMER_HALF_LIVES,
        newcomers: int = 3,
        seed: int = 0,
    ) -> None:
        half_lives = tuple(None if h is None else float(h) for h in half_lives)
        newcomer_half_lives = tuple(None if h is None else float(h) for h in newcomer_half_lives)
        if not half_lives:
            raise ValueError("half_lives must name at least one decay (None: plain counts)")
        for name, values in (("half_lives", half_lives), ("newcomer_half_lives", newcomer_half_lives)):
            if any(h is not None and not h > 0 for h in values):
                raise ValueError(f"{name} must be > 0 seconds or None, got {values}")
        if isinstance(newcomers, bool) or not isinstance(newcomers, int) or newcomers < 1:
            raise ValueError(f"newcomers must be a positive int (fewer earlier items), got {newcomers!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if memory is not None and memory < 1:
            raise ValueError(f"memory must be >= 1 event or None, got {memory}")
        if judge is not None and (isinstance(judge, bool) or not isinstance(judge, int) or judge < 1):
            raise ValueError(
                f"judge must be a positive int (events of users with fewer earlier items) or None, got {judge!r}"
            )
        self.half_lives = half_lives
        self.k = k
        self.memory = memory
        if reward not in ("hit", "ndcg"):
            raise ValueError(f"reward must be 'hit' or 'ndcg', got {reward!r}")
        self.judge = judge
        self.reward = reward
        self.per_user = per_user
        self.newcomer_half_lives = newcomer_half_lives
        self.newcomers = newcomers
        n_arms = len(half_lives) + len(newcomer_half_lives)
        self._item_arrays = tuple(f"_acc{j}" for j in range(n_arms))  # type: ignore[misc]
        super().__init__(seed=seed)

    def _init_state(self) -> None:
        super()._init_state()
        decays = [(h, False) for h in self.half_lives] + [(h, True) for h in self.newcomer_half_lives]
        self._arms = [_Arm(self, j, h, self.per_user, new) for j, (h, new) in enumerate(decays)]
        self._hits = np.zeros(len(self._arms), dtype=np.float64)  # exponentially weighted hits per arm
        self._unsent = np.zeros(len(self._arms), dtype=np.float64)  # hits counted here since the last delta
        self._judged = 0  # events judged (here and, through deltas, on other workers)
        self._unsent_judged = 0

    def __getattr__(self, name: str) -> Any:
        match = _ARM_ARRAY.fullmatch(name)
        if match is None or "_arms" not in self.__dict__:
            raise AttributeError(name)
        return self._arms[int(match.group(1))]._acc

    # -- what it chose

    @property
    def chosen_arm(self) -> int:
        """Index (in ``half_lives``) of the arm served now."""
        return int(np.argmax(self._hits))  # the first on a tie

    @property
    def chosen(self) -> float | None:
        """The half-life of the arm served now (``None``: plain counts); :attr:`chosen_label` says which arm."""
        return self._arms[self.chosen_arm].half_life

    @property
    def chosen_label(self) -> str:
        """The arm served now, as :meth:`hit_rates` names it (``"7d"``, ``"none"``, ``"new 1d"``)."""
        return self._arms[self.chosen_arm].label

    def hit_rates(self) -> dict[str, float]:
        """Each arm's weighted hits per judged event (its recent HR@k on the judged events), by arm label."""
        weight = self._weight_of(self._judged)
        return {arm.label: float(x / weight) if weight else 0.0 for arm, x in zip(self._arms, self._hits, strict=True)}

    def _weight_of(self, n: int) -> float:
        if self.memory is None:
            return float(n)
        keep = 1.0 - 1.0 / self.memory
        return (1.0 - keep**n) / (1.0 - keep)

    # -- learning: judge, then learn every arm

    def _grow(self, n_users: int, n_items: int) -> None:
        for arm in self._arms:
            arm._grow(n_users, n_items)

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        earlier = self._earlier_items(u, i) if self.judge is not None or self.newcomer_half_lives else None
        self._judge(i, batch, earlier)
        newcomers = None
        for arm in self._arms:
            if not arm.newcomers_only:
                arm._learn(u, i, batch)
                continue
            if newcomers is None:
                assert earlier is not None
                newcomers = np.flatnonzero(earlier < self.newcomers)
            if len(newcomers) == len(u):
                arm._learn(u, i, batch)
            elif len(newcomers):
                arm._learn(u[newcomers], i[newcomers], batch.select(newcomers))

    def _earlier_items(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """For each event, how many distinct items its user had before it (earlier events of the batch included)."""
        seen, n_seen = self._seen, len(self._seen)
        if len(u) == 1:
            r = int(u[0])
            return np.array([len(seen[r]) if r < n_seen else 0], dtype=np.int64)
        out = np.empty(len(u), dtype=np.int64)
        added: dict[int, set[int]] = {}
        for j, (r, x) in enumerate(zip(u.tolist(), i.tolist(), strict=True)):
            before = seen[r] if r < n_seen else set()
            mine = added.setdefault(r, set())
            out[j] = len(before) + len(mine)
            if x not in before:
                mine.add(x)
        return out

    def _judge(self, i: np.ndarray, batch: Interactions, earlier: np.ndarray | None) -> None:
        judged = batch.weights > 0
        if self.judge is not None:
            assert earlier is not None
            judged &= earlier < self.judge
        n = int(judged.sum())
        if not n:
            return
        items = i[judged]
        gains = 1.0 / np.log2(np.arange(self.k) + 2.0) if self.reward == "ndcg" else np.ones(self.k)
        hits = np.zeros(len(self._arms), dtype=np.float64)
        for a, arm in enumerate(self._arms):
            at = {row: n for n, row in enumerate(arm.judged_rows(self.k))}
            r = np.fromiter((at.get(x, -1) for x in items.tolist()), dtype=np.int64, count=len(items))
            # an item first seen in this batch is indexed already but has no score yet: never a hit
            hit = (r >= 0) & (arm._acc[items] > 0)
            hits[a] = gains[r[hit]].sum()
        if self.memory is not None:
            self._hits *= (1.0 - 1.0 / self.memory) ** n
        self._hits += hits
        self._unsent += hits
        self._judged += n
        self._unsent_judged += n

    # -- serving: the chosen arm's scores and kept top list

    def item_scores(self) -> np.ndarray:
        """Decayed score of every item under the chosen decay, at the newest event time seen."""
        return self._arms[self.chosen_arm].item_scores()

    def browse_scores(self) -> np.ndarray:
        """Scores that order a catalogue page (a category list) for anyone: the best-hitting arm over all events.

        A newcomers' arm ranks what people take first and leaves most of a category at 0,
        so pages browsed by everyone are ordered by the arm chosen among those counting every event.
        """
        overall = [a for a, arm in enumerate(self._arms) if not arm.newcomers_only]
        best = overall[int(np.argmax(self._hits[overall]))]  # the first on a tie
        return self._arms[best].item_scores()

    def _score(self, u: np.ndarray) -> np.ndarray:
        return self._arms[self.chosen_arm]._score(u)

    def _global_top(self, m: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self._arms[self.chosen_arm]._global_top(m)

    # -- forgetting and eviction

    def _forget_rows(self, rows: np.ndarray) -> None:
        for arm in self._arms:
            arm._forget_rows(rows)

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        for arm in self._arms:
            arm._forget_item_rows(rows)

    # -- save and load

    def _state(self) -> dict[str, np.ndarray]:
        out = {f"arm{j}.{key}": value for j, arm in enumerate(self._arms) for key, value in arm._state().items()}
        out["hits"] = self._hits.copy()
        return out

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        for j, arm in enumerate(self._arms):
            prefix = f"arm{j}."
            saved = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            if saved:  # state saved before this arm existed: it starts empty
                arm._set_state(saved)
        hits = np.array(arrays["hits"], dtype=np.float64)
        self._hits = np.zeros(len(self._arms), dtype=np.float64)
        self._hits[: len(hits)] = hits[: len(self._arms)]

    def _extra_meta(self) -> dict[str, Any]:
        return {"anchors": [arm._anchor for arm in self._arms], "judged": self._judged}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        anchors = list(extra.get("anchors") or [])
        for arm, anchor in zip(self._arms, anchors + [None] * (len(self._arms) - len(anchors)), strict=False):
            arm._anchor = anchor
        self._judged = int(extra.get("judged", 0))

    # -- sharing across workers: each arm's scores with its anchor, and the hits counted here

    def _begin_sharing_extra(self) -> None:
        self._unsent[:] = 0.0
        self._unsent_judged = 0

    def _take_item_delta_extra(self, delta: Any) -> None:
        delta.extra["anchors"] = [arm._anchor for arm in self._arms]
        delta.extra["hits"] = self._unsent.tolist()
        delta.extra["judged"] = self._unsent_judged
        self._unsent[:] = 0.0
        self._unsent_judged = 0

    def _export_items_extra(self, delta: Any, rows: np.ndarray) -> None:
        delta.extra["anchors"] = [arm._anchor for arm in self._arms]
        delta.extra["hits"] = self._hits.tolist()
        delta.extra["judged"] = self._judged

    def _in_one_frame(self, deltas: list[Any]) -> list[Any]:
        """Each arm's scores relative to the newest anchor of that arm among ``deltas``."""
        n = len(self._arms)
        anchors = [list(d.extra.get("anchors") or [None] * n) for d in deltas]
        for j, arm in enumerate(self._arms):
            moved = _one_anchor(
                deltas, f"_acc{j}", arm.half_life, lambda d, j=j: (d.extra.get("anchors") or [None] * n)[j]
            )
            deltas = [type(d)(d.model, d.items, arrays, d.globals, d.extra, d.extra_arrays) for d, arrays, _ in moved]
            for row, (_, _, anchor) in zip(anchors, moved, strict=True):
                row[j] = anchor
        return [type(d)(d.model, d.items, d.arrays, d.globals, {**d.extra, "anchors": a}, d.extra_arrays)
                for d, a in zip(deltas, anchors, strict=True)]  # fmt: skip

    def _merge_item_deltas_extra(self, deltas: list[Any], merged: Any) -> None:
        counted = [d for d in deltas if "hits" in d.extra]
        if counted:
            merged.extra["hits"] = np.sum(
                [np.asarray(d.extra["hits"], dtype=np.float64) for d in counted], axis=0
            ).tolist()
            merged.extra["judged"] = int(sum(int(d.extra.get("judged", 0)) for d in counted))

    def _negate_item_delta_extra(self, delta: Any) -> None:
        if "hits" in delta.extra:
            delta.extra["hits"] = [-h for h in delta.extra["hits"]]
            delta.extra["judged"] = -int(delta.extra.get("judged", 0))

    def _prepare_item_delta(self, delta: Any) -> Any:
        anchors = delta.extra.get("anchors") or [None] * len(self._arms)
        absolute = bool(delta.extra.get("absolute"))
        arrays = dict(delta.arrays)
        for j, (arm, theirs) in enumerate(zip(self._arms, anchors, strict=True)):
            name = f"_acc{j}"
            if name in arrays:
                arrays[name] = arm.in_frame(arrays[name], theirs, absolute)
        return type(delta)(delta.model, delta.items, arrays, delta.globals, delta.extra, delta.extra_arrays)

    def _apply_item_delta_extra(self, delta: Any, rows: np.ndarray) -> None:
        hits = np.asarray(delta.extra.get("hits") or np.zeros(len(self._arms)), dtype=np.float64)
        if delta.extra.get("absolute"):
            self._hits = hits.copy()
            self._judged = int(delta.extra.get("judged", 0))
        else:
            self._hits += hits
            self._judged += int(delta.extra.get("judged", 0))
        for j, arm in enumerate(self._arms):
            values = delta.arrays.get(f"_acc{j}")
            if delta.extra.get("absolute") or (values is not None and (np.asarray(values) < 0).any()):
                arm._top_forget()

    def _after_item_change(self, rows: np.ndarray) -> None:
        for arm in self._arms:
            arm._top_raised(rows)

    def _export_user_extra(self, rows: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for j, arm in enumerate(self._arms):
            for key, value in arm._export_user_extra(rows).items():
                out[f"{key}{j}"] = value
        return out

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        for j, arm in enumerate(self._arms):
            arm._import_user_extra(rows, {"strongest": extra.get(f"strongest{j}")})

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"half_lives": (None, 3600.0), "memory": 50, "newcomer_half_lives": ()},
            {"half_lives": (3600.0, None, 60.0), "memory": None, "judge": None, "reward": "hit", "per_user": "sum"},
            {"half_lives": (None,), "newcomer_half_lives": (None, 3600.0), "newcomers": 2, "memory": 50},
        ]


def _label(half_life: float | None) -> str:
    """``"none"`` or the half-life in the largest whole unit (``"7d"``, ``"1h"``, ``"90s"``)."""
    if half_life is None:
        return "none"
    for unit, seconds in (("d", DAY), ("h", 3600.0), ("min", 60.0)):
        if half_life >= seconds and half_life % seconds == 0:
            return f"{int(half_life // seconds)}{unit}"
    return f"{half_life:g}s"
