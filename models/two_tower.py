"""A two-tower model ``s(u, i) = f(u)ᵀ g(i) + b(i)`` trained online with a sampled softmax, in torch.

The item tower sees the item's id and its content (catalogue tags and title
words); the user tower sees the user's most recent items, their features
(from the events' context: age, gender, occupation, device...) and optionally
the hour of day. Learning buffers events and takes a gradient step each time
``micro_batch`` events are buffered, so the cost of a step is shared by many
events; the user tower's input (the recent items, the features) is updated at
once, so lists reflect every event learned. Between steps the item tower's
output for the whole catalogue is cached, and scoring a user is one product.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from models.base import ContextT, Interactions, OnlineRecommender
from models.devices import resolve_device
from models.ids import IdIndex
from models.retrieval import ItemVectorIndex
from models.scoring import dot_scores
from models.sharing import ItemDelta, id_rows, sum_item_rows

__all__ = ["TwoTower", "title_tokens"]

_EPS = 1e-8
_MAX_TAGS = 16  # content slots kept per item (tags, title words)
_MAX_TOKENS = 16
_WORD = re.compile(r"[0-9a-z]+")
# the growing tables; rows of the first three start from ``id_rows`` of their id (salted with the
# table's name), the others at zero
_TABLES = ("item", "item_bias", "tag", "tag_bias", "token", "token_bias", "feature")
_RANDOM_TABLES = ("item", "tag", "token")
# vocabularies (tags, title words, user features): their tables are shared by name across workers
_VOCABS: dict[str, tuple[str, ...]] = {
    "tag": ("tag", "tag_bias"),
    "token": ("token", "token_bias"),
    "feature": ("feature",),
}
_DENSE = ("position", "mix", "hidden_in", "hidden_bias", "hidden_out")


def title_tokens(title: str | None) -> tuple[str, ...]:
    """Lower-case words of a title, plus the decade of a four-digit year (``"1995"`` adds ``"1990s"``).

    Examples
    --------
    >>> title_tokens("Toy Story (1995)")
    ('toy', 'story', '1995', '1990s')
    """
    if not title:
        return ()
    words = _WORD.findall(title.lower())
    decades = [f"{w[:3]}0s" for w in words if len(w) == 4 and w.isdigit() and w[:2] in ("18", "19", "20")]
    return tuple(dict.fromkeys([*words, *decades]))


def _table_property(store: str, name: str) -> Any:
    """A read-only property giving table ``name`` of ``_tables`` (or its Adagrad sums, ``_acc``).

    The sharing machinery of :class:`~models.base.OnlineRecommender` reads and updates model
    arrays by attribute name; a dense table the model does not have (no hidden layer) reads
    as an empty tensor, which never changes.
    """

    def get(self: TwoTower) -> torch.Tensor:
        return (self._tables if store == "table" else self._acc).get(name, self._no_rows)

    return property(get)


def _ensure_rows(table: torch.Tensor, n: int) -> torch.Tensor:
    """``table`` with at least ``n`` rows (capacity doubles; new rows zero)."""
    rows = table.shape[0]
    if rows >= n:
        return table
    out = torch.zeros((max(n, 2 * rows, 16), *table.shape[1:]), dtype=table.dtype, device=table.device)
    out[:rows] = table
    return out


class TwoTower(OnlineRecommender):
    """Two towers, ``score(u, i) = f(u) · g(i) + b(i)``, learned online with a sampled softmax.

    Item tower
        ``g(i) = γ_i e_i + mean(tag vectors of i) + mean(word vectors of its title)``
        and ``b(i) = γ_i β_i + mean(tag biases) + mean(word biases)``, where
        ``e_i, β_i`` are the id embedding and bias and ``γ_i = n_i / (n_i +
        id_ramp)`` grows with the number ``n_i`` of the item's events learned
        by gradient steps (``γ_i = [n_i > 0]`` when ``id_ramp`` is 0). An item
        nobody has interacted with is its content alone: its id embedding,
        still at its random start, cannot hurt it, so new items with tags are
        scored by what their tags say before their first event.

    User tower
        ``z = A · Σ_p w_p g(h_p) + Σ_k v_k`` where ``h_p`` are the user's last
        ``history`` distinct items, ``w`` a learned softmax over their
        positions (most recent last), ``A`` a learned ``d x d`` matrix
        (starting as the identity) and ``v_k`` the embeddings of the user's
        features: the latest value of each ``context_keys`` field seen in the
        user's events (numbers are bucketed by ``numeric_bucket``: ages by
        decade; other fields are ignored) and, with ``use_hour``, the hour of
        day (UTC; of the event when learning, of the newest event learned when
        recommending). With ``hidden > 0``, ``f(u) = z + W_2 relu(W_1 z + c)``
        (``W_2`` starts at zero), else ``f(u) = z``. Users are not embedded, so
        a user's first events shape their list at once, and unknown users score
        as ``f = 0`` (plus the hour): by item bias, a popularity ranking.

    Learning
        Every event ``(u, i)`` is a positive (with ``learn_repeats=False``,
        only a user's first event with each item), recorded with the user's
        tower input at that moment; then the user's recent items and features are
        updated. Each time ``micro_batch`` positives are buffered, ``n_steps``
        gradient steps minimise the softmax cross-entropy of each positive
        against the batch's other positives (in-batch negatives) and
        ``n_negatives`` items drawn uniformly from the catalogue, with the logQ
        correction: the logit of a candidate ``c`` is lowered by ``log(B p_c +
        S / n)``, its expected number of draws (``p_c`` its share of the
        positives so far, ``B`` the batch, ``S`` the uniform draws, ``n`` the
        items). Candidates the user interacted with (in the recent items or
        another positive of theirs in the batch) are not negatives. The rows
        used take a row-wise Adagrad step (``lr``, ``adagrad_decay``), with
        ``l2`` weight decay on the embedding rows. The model after ``N`` events
        does not depend on how they were cut into ``learn`` calls
        (``batch_equals_sequential``).

    Scoring
        The item tower output of every item is cached in ``float64`` after each
        step (and for items added or changed since); a user's vector is
        computed from the caches in ``float64`` and the product is rounded to
        ``float32`` (:func:`models.scoring.dot_scores`), so a user's list does
        not depend on the other users in the call. :meth:`topk_device` ranks on
        the model's device.

    Defaults were tuned on the first 60% of MovieLens 100K and of a YOOCHOOSE
    click sample (``docs/tuning/two_tower.md``): the hour of day lowered
    HR@10 on both, and learning repeated clicks raised it on the click log.

    Several workers (:mod:`models.sharing`)
        A user's recent items and features move with the user
        (``export_users``); their buffered positives stay and train where they
        arrived. Item id rows and biases, tag, title-word and feature rows,
        the dense weights (position softmax, ``A``, hidden layer), their
        Adagrad sums and the item event counts are shared as the changes since
        the last delta, which every other worker adds: asynchronous SGD, as
        with a parameter server. Each worker's step reads item rows that lack
        the other workers' latest changes, so ``sharing_is_exact`` is false:
        the counts add up exactly, the trained rows only approximately
        (``tests/models/test_sharing.py`` states the tolerance: HR@10 within
        0.03 of one model's on a generated log).

    Determinism: the initial row of an item, tag or title word depends only
    on the seed and its id (:func:`models.sharing.id_rows`) and negatives from a
    seeded CPU ``torch.Generator`` drawn only in gradient steps, so on the CPU
    the same seed and events give the same model. On CUDA, gradients summed
    with atomics may differ in the last bits between runs.

    Parameters
    ----------
    n_factors
        Dimension ``d`` of the towers' output.
    history
        Number of recent items in the user tower.
    micro_batch
        Events buffered per gradient step (and the in-batch negatives).
    n_steps
        Gradient steps per micro-batch (uniform negatives redrawn each step).
    n_negatives
        Items drawn uniformly from the catalogue per step, shared by the batch.
    lr
        Adagrad learning rate.
    adagrad_decay
        Factor applied to a row's sum of squared gradients before each of its updates: 1 is
        Adagrad (steps shrink as a row is updated); below 1 the sum forgets old gradients, so
        rows updated often keep adapting to a drifting stream.
    l2
        Weight decay of the embedding rows each step uses.
    init_std
        Standard deviation of the initial item id, tag and word embeddings.
    id_ramp
        Events after which an item's id embedding weighs one half (0: fully from its first event).
    hidden
        Width of the residual ReLU layer of the user tower (0: none).
    context_keys
        Fields of the events' context kept as the user's features (others are ignored).
    numeric_bucket
        Width of the buckets of numeric context values (age 24 -> "age=2").
    use_hour
        Use the hour of day (UTC) as a user feature.
    learn_repeats
        Learn from events whose item the user already interacted with (lists leave those
        items out; the item becomes the most recent either way).
    ann_min_items
        From this many item rows on, a list ranks the candidates an item index
        (:class:`models.retrieval.ItemVectorIndex`) retrieves, scored exactly
        with the current item outputs, instead of scoring every item. The
        index re-inserts the items a step trained; items whose output moved
        only through a shared tag or title word keep their indexed vector
        until they are trained (or the index is rebuilt), which costs recall,
        not exactness of the scores.
    ann_nprobe
        Inverted lists the item index scans per list.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
    seed
        Seed of the initial rows and of the negatives.

    Examples
    --------
    >>> model = TwoTower(n_factors=8, micro_batch=8, seed=0, device="cpu")
    >>> model.add_items(["alien", "solaris", "heat", "ronin", "dune"],
    ...                 tags=[("scifi",), ("scifi",), ("crime",), ("crime",), ("scifi",)])
    >>> likes = {"scifi": ["alien", "solaris"], "crime": ["heat", "ronin"]}
    >>> users = [f"{taste}{n}" for n in range(20) for taste in likes]
    >>> stream = [(user, item) for _ in range(6) for user in users for item in likes[user.rstrip("0123456789")]]
    >>> model.learn(Interactions.from_columns([u for u, _ in stream], [i for _, i in stream]))
    >>> model.learn(Interactions.from_columns(["ann"], ["alien"]))
    >>> model.recommend(["ann"], k=2).items   # dune: nobody has seen it, its tag has
    [['solaris', 'dune']]
    """

    name: ClassVar[str] = "two_tower"
    batch_equals_sequential: ClassVar[bool] = True
    shares_state: ClassVar[bool] = True
    sparse_rest_zero: ClassVar[bool] = False  # lists rank the item index's candidates
    sharing_is_exact: ClassVar[bool] = False  # asynchronous SGD (see "Several workers")
    merges_item_deltas: ClassVar[bool] = True  # vocabulary rows (tags, title words) go with part 0
    _user_arrays: ClassVar[tuple[str, ...]] = ("_hist",)
    _user_item_refs: ClassVar[tuple[str, ...]] = ("_hist",)
    _item_arrays: ClassVar[tuple[str, ...]] = (
        "_item_vectors",
        "_item_biases",
        "_item_vectors_adagrad",
        "_item_biases_adagrad",
        "_item_events",
        "_item_trained",
    )
    _global_arrays: ClassVar[tuple[str, ...]] = tuple(
        f"_dense_{name}{suffix}" for name in _DENSE for suffix in ("", "_adagrad")
    )

    def __init__(
        self,
        n_factors: int = 64,
        history: int = 20,
        micro_batch: int = 128,
        n_steps: int = 3,
        n_negatives: int = 256,
        lr: float = 0.05,
        adagrad_decay: float = 1.0,
        l2: float = 1e-5,
        init_std: float = 0.1,
        id_ramp: float = 0.0,
        hidden: int = 0,
        context_keys: Sequence[str] = ("age", "gender", "occupation", "device"),
        numeric_bucket: float = 10.0,
        use_hour: bool = False,
        learn_repeats: bool = True,
        ann_min_items: int = 50_000,
        ann_nprobe: int = 32,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        for name, value, low in (
            ("n_factors", n_factors, 1),
            ("history", history, 1),
            ("micro_batch", micro_batch, 1),
            ("n_steps", n_steps, 1),
            ("n_negatives", n_negatives, 0),
            ("hidden", hidden, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < adagrad_decay <= 1:
            raise ValueError(f"adagrad_decay must be in (0, 1], got {adagrad_decay}")
        if l2 < 0 or init_std < 0 or id_ramp < 0:
            raise ValueError(f"l2, init_std and id_ramp must be >= 0, got {l2}, {init_std}, {id_ramp}")
        if not numeric_bucket > 0:
            raise ValueError(f"numeric_bucket must be > 0, got {numeric_bucket}")
        self.n_factors = n_factors
        self.history = history
        self.micro_batch = micro_batch
        self.n_steps = n_steps
        self.n_negatives = n_negatives
        self.lr = lr
        self.adagrad_decay = adagrad_decay
        self.l2 = l2
        self.init_std = init_std
        self.id_ramp = id_ramp
        self.hidden = hidden
        self.context_keys = tuple(str(k) for k in context_keys)
        self.numeric_bucket = numeric_bucket
        self.use_hour = use_hour
        self.learn_repeats = learn_repeats
        self.device = device
        self.ann_min_items = ann_min_items
        self.ann_nprobe = ann_nprobe
        super().__init__(seed=seed)

    # -- state -----------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        """The device holding the tables (``device``, or CUDA when available)."""
        return self._device

    def _init_state(self) -> None:
        super()._init_state()
        self._device = resolve_device(self.device)
        d, dev = self.n_factors, self._device
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(self.seed)
        self._uninitialised: set[int] = set()  # freed item rows, initialised from their next id
        self._vocab_base: dict[str, np.ndarray] | None = None  # vocabulary tables as of the last delta
        self._no_rows = torch.zeros(0, dtype=torch.float32, device=dev)  # what an absent dense table shares
        self._caches_stale = False  # whether the delta being applied changed every item's output
        self.tag_index = IdIndex()
        self.token_index = IdIndex()
        self.feature_index = IdIndex()  # "key=value" of user features and "hour=h"
        self._feature_rows: dict[tuple[int, type, Any], int] = {}  # (slot, type, value) -> row
        self._hour_rows = [-1] * 24
        # growing tables (rows initialised so far in _rows) and their Adagrad sums
        self._tables: dict[str, torch.Tensor] = {
            name: torch.zeros((0, 1 if name.endswith("_bias") else d), dtype=torch.float32, device=dev)
            for name in _TABLES
        }
        self._rows = dict.fromkeys(_TABLES, 0)
        # dense parameters: position logits (most recent last), mixing matrix, residual layer
        dense = {
            "position": -0.1 * torch.arange(self.history - 1, -1, -1, dtype=torch.float32)[None, :],
            "mix": torch.eye(d, dtype=torch.float32),
        }
        if self.hidden:
            rng = np.random.default_rng([self.seed, 9])
            w1 = rng.normal(0.0, 1.0 / math.sqrt(d), size=(d, self.hidden)).astype(np.float32)
            dense["hidden_in"] = torch.from_numpy(w1)
            dense["hidden_bias"] = torch.zeros((1, self.hidden), dtype=torch.float32)
            dense["hidden_out"] = torch.zeros((self.hidden, d), dtype=torch.float32)
        self._tables.update({k: v.to(dev) for k, v in dense.items()})
        self._acc = {name: torch.zeros_like(t) for name, t in self._tables.items()}
        # per item: content slots (-1: none), events counted for logQ, events learned by steps
        self._item_tags = np.full((0, 0), -1, dtype=np.int64)
        self._item_tokens = np.full((0, 0), -1, dtype=np.int64)
        self._item_events = np.zeros(0, dtype=np.float64)
        self._item_trained = np.zeros(0, dtype=np.float64)
        # items in an event or a catalogue update so far: the negatives (rows indexed for the
        # rest of a batch are not, so that the model does not depend on how events are batched)
        self._item_visible = np.zeros(0, dtype=bool)
        # per user: recent items (most recent last, -1: none) and latest features (-1: none)
        self._hist = np.full((0, self.history), -1, dtype=np.int64)
        self._feats = np.full((0, len(self.context_keys)), -1, dtype=np.int64)
        # buffered events (the first _n_buffered rows): user row, user tower input at the event
        # (recent items, features and hour), item, weight
        b = self.micro_batch
        self._buf_user = np.zeros(b, dtype=np.int64)
        self._buf_hist = np.full((b, self.history), -1, dtype=np.int64)
        self._buf_feats = np.full((b, len(self.context_keys) + 1), -1, dtype=np.int64)
        self._buf_item = np.zeros(b, dtype=np.int64)
        self._buf_weight = np.zeros(b, dtype=np.float32)
        self._n_buffered = 0
        # float64 caches for scoring: item tower output, item bias, dense parameters
        self._x64 = np.zeros((0, d), dtype=np.float64)
        self._b64 = np.zeros(0, dtype=np.float64)
        self._epoch = 0  # item outputs change as a whole (a step, new dense weights): a new epoch
        self._x64_epoch = np.zeros(0, dtype=np.int64)  # per item row: the epoch its cached output is of (-1: none)
        self._ann = ItemVectorIndex(min_items=self.ann_min_items, nprobe=self.ann_nprobe, seed=self.seed)
        self._dense64: dict[str, np.ndarray] | None = None
        self._items_dev: tuple[torch.Tensor, torch.Tensor] | None = None  # for topk_device

    def _grow(self, n_users: int, n_items: int) -> None:
        self._grow_table("item", n_items)
        self._grow_table("item_bias", n_items)
        if self._uninitialised:
            self._initialise_reused_rows()
        if len(self._item_events) < n_items:
            self._item_events = self._grown(self._item_events, n_items)
            self._item_trained = self._grown(self._item_trained, n_items)
            self._item_visible = self._grown(self._item_visible, n_items, fill=False)
            self._item_tags = self._grown(self._item_tags, n_items, fill=-1)
            self._item_tokens = self._grown(self._item_tokens, n_items, fill=-1)
            self._x64 = self._grown(self._x64, n_items)
            self._b64 = self._grown(self._b64, n_items)
            self._x64_epoch = self._grown(self._x64_epoch, n_items, fill=-1)
        if len(self._hist) < n_users:
            self._hist = self._grown(self._hist, n_users, fill=-1)
            self._feats = self._grown(self._feats, n_users, fill=-1)

    def _grow_table(self, name: str, n: int) -> None:
        done = self._rows[name]
        if n <= done:
            return
        table = _ensure_rows(self._tables[name], n)
        self._acc[name] = _ensure_rows(self._acc[name], n)
        if name in _RANDOM_TABLES:
            ids = self._index_of(name).ids[done:n]
            table[done:n] = torch.from_numpy(self._initial_rows(name, ids)).to(self._device)
            if name == "item":  # a row freed before it was grown waits for its next id
                self._uninitialised.update(done + j for j, key in enumerate(ids) if key is None)
                self._ann.mark(np.arange(done, n))
        self._tables[name] = table
        self._rows[name] = n

    def _index_of(self, name: str) -> IdIndex:
        """The ids of the rows of table ``name`` (item, tag, title word or user feature)."""
        kind = name.removesuffix("_bias")
        return {"item": self.item_index, "tag": self.tag_index, "token": self.token_index}.get(kind, self.feature_index)

    def _initial_rows(self, name: str, ids: Sequence[str | None]) -> np.ndarray:
        """Initial rows of table ``name`` for ``ids``: a function of the seed and the id (every worker agrees)."""
        if name in _RANDOM_TABLES:
            return id_rows([key or "" for key in ids], self.n_factors, self.seed, self.init_std, salt=name)
        return np.zeros((len(ids), 1 if name.endswith("_bias") else self.n_factors), dtype=np.float32)

    def _initialise_reused_rows(self) -> None:
        """Start the freed item rows that hold an id again from that id's initial row."""
        rows = np.array(sorted(self._uninitialised), dtype=np.int64)
        ids = self.item_index.ids_of(rows)
        live = np.array([key is not None for key in ids], dtype=bool)
        if live.any():
            rows, ids = rows[live], [key for key in ids if key is not None]
            self._tables["item"][torch.from_numpy(rows).to(self._device)] = torch.from_numpy(
                self._initial_rows("item", ids)
            ).to(self._device)
            self._uninitialised.difference_update(rows.tolist())
            self._mark_stale(rows)

    def _feature(self, name: str) -> int:
        """Row of user feature ``name`` in the feature table (added on first sight)."""
        row = self.feature_index.add(name)
        if row >= self._rows["feature"]:
            self._grow_table("feature", row + 1)
            self._dense64 = None
        return row

    def _context_features(self, context: ContextT) -> list[tuple[int, int]]:
        """(slot, feature row) of the ``context_keys`` fields present in ``context``."""
        out = []
        known = self._feature_rows
        for slot, key in enumerate(self.context_keys):
            value = context.get(key)  # type: ignore[union-attr]
            if value is None:
                continue
            row = known.get((slot, type(value), value))
            if row is None:
                name = value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    if not math.isfinite(value):
                        continue
                    name = math.floor(value / self.numeric_bucket)
                row = known[(slot, type(value), value)] = self._feature(f"{key}={name}")
            out.append((slot, row))
        return out

    def _hour_feature(self, timestamp: float, *, add: bool) -> int:
        if not self.use_hour or not math.isfinite(timestamp):
            return -1
        hour = int(timestamp // 3600) % 24
        row = self._hour_rows[hour]
        if row < 0:
            name = f"hour={hour}"
            row = self._feature(name) if add else self.feature_index.get(name)
            self._hour_rows[hour] = row
        return row

    # -- catalogue content -----------------------------------------------------------

    def _set_content(self, items: np.ndarray, values: list[tuple[str, ...]], kind: str) -> None:
        index, limit = (self.tag_index, _MAX_TAGS) if kind == "tag" else (self.token_index, _MAX_TOKENS)
        rows = self.item_index.lookup(items)
        width = min(limit, max((len(dict.fromkeys(v)) for v in values), default=0))
        matrix = self._item_tags if kind == "tag" else self._item_tokens
        if width > matrix.shape[1]:
            wider = np.full((matrix.shape[0], width), -1, dtype=np.int64)
            wider[:, : matrix.shape[1]] = matrix
            matrix = wider
        for row, names in zip(rows.tolist(), values, strict=True):
            if row < 0:
                continue
            ids = index.add_many(list(dict.fromkeys(str(v) for v in names))[:limit]) if names else []
            matrix[row] = -1
            matrix[row, : len(ids)] = ids
            self._mark_stale(np.array([row]))
        self._grow_table(kind, len(index))
        self._grow_table(f"{kind}_bias", len(index))
        if kind == "tag":
            self._item_tags = matrix
        else:
            self._item_tokens = matrix

    def add_items(
        self,
        items: Iterable[Any],
        tags: Iterable[Sequence[str]] | None = None,
        titles: Iterable[str | None] | None = None,
    ) -> None:
        """Add catalogue items (see :meth:`OnlineRecommender.add_items`); their tags and titles are their content."""
        items = [str(i) for i in items]
        super().add_items(items, tags, titles)
        rows = self.item_index.lookup(items)
        self._item_visible[rows[rows >= 0]] = True

    def _set_item_tags(self, items: np.ndarray, tags: list[tuple[str, ...]]) -> None:
        self._set_content(items, [tuple(t) for t in tags], "tag")

    def _set_item_titles(self, items: np.ndarray, titles: list[str]) -> None:
        self._set_content(items, [title_tokens(t) for t in titles], "token")

    # -- learning --------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        if self._uninitialised:
            self._initialise_reused_rows()
        contexts: Sequence[ContextT] = batch.contexts or (None,) * len(batch)
        hist, feats, events, seen, visible = self._hist, self._feats, self._item_events, self._seen, self._item_visible
        hour, repeats = self.use_hour, self.learn_repeats
        pending: set[tuple[int, int]] = set()  # pairs of this batch (not yet in _seen)
        for uu, ii, w, ts, ctx in zip(
            u.tolist(), i.tolist(), batch.weights.tolist(), batch.timestamps.tolist(), contexts, strict=True
        ):
            if ctx:
                for slot, row in self._context_features(ctx):
                    feats[uu, slot] = row
            recent = hist[uu]
            visible[ii] = True
            if not repeats:
                if ii in seen[uu] or (uu, ii) in pending:
                    _push(recent, ii)
                    continue
                pending.add((uu, ii))
            n = self._n_buffered
            self._buf_user[n] = uu
            self._buf_hist[n] = hist[uu]
            self._buf_feats[n, :-1] = feats[uu]
            self._buf_feats[n, -1] = self._hour_feature(ts, add=True) if hour else -1
            self._buf_item[n] = ii
            self._buf_weight[n] = w
            self._n_buffered = n + 1
            events[ii] += 1.0
            _push(recent, ii)
            if n + 1 == self.micro_batch:
                self._train_buffer()

    def _train_buffer(self) -> None:
        """Take ``n_steps`` gradient steps on the buffered events, then empty the buffer."""
        n = self._n_buffered
        users, items = self._buf_user[:n].copy(), self._buf_item[:n].copy()
        hist, feats = self._buf_hist[:n].copy(), self._buf_feats[:n].copy()
        weights = self._buf_weight[:n].copy()
        self._n_buffered = 0
        np.add.at(self._item_trained, items, 1.0)
        with torch.enable_grad():
            for _ in range(self.n_steps):
                self._step(users, hist, feats, items, weights)
        self._epoch += 1  # every cached item vector is stale
        self._dense64 = None
        self._items_dev = None

    def _gate(self, rows: np.ndarray) -> np.ndarray:
        """Weight of the id embedding of item ``rows``: ``n / (n + id_ramp)`` of their learned events."""
        n = self._item_trained[rows]
        if self.id_ramp == 0:
            return (n > 0).astype(np.float64)
        return n / (n + self.id_ramp)

    def _leaf(self, name: str, rows: np.ndarray | None) -> torch.Tensor:
        """Rows of a table (all rows when ``rows`` is None) as a leaf tensor that collects gradients."""
        table = self._tables[name]
        values = table if rows is None else table[torch.from_numpy(rows).to(self._device)]
        return values.detach().clone().requires_grad_(True)

    def _content(
        self, kind: str, matrix: np.ndarray, leaves: dict[str, tuple[np.ndarray | None, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Mean vector and mean bias of the tags or title words in ``matrix`` (rows x slots), with gradients."""
        valid = matrix >= 0
        if not valid.any():
            return None
        rows, local = np.unique(matrix[valid], return_inverse=True)
        vec, bias = self._leaf(kind, rows), self._leaf(f"{kind}_bias", rows)
        leaves[kind], leaves[f"{kind}_bias"] = (rows, vec), (rows, bias)
        count = valid.sum(1)
        offsets = np.concatenate([[0], np.cumsum(count)[:-1]])
        weights = np.repeat(1.0 / np.maximum(count, 1), count).astype(np.float32)
        dev = self._device
        ids = torch.from_numpy(local.astype(np.int64)).to(dev)
        starts = torch.from_numpy(offsets.astype(np.int64)).to(dev)
        psw = torch.from_numpy(weights).to(dev)

        def mean(table: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.embedding_bag(ids, table, starts, mode="sum", per_sample_weights=psw)

        return mean(vec), mean(bias)[:, 0]

    def _step(
        self, users: np.ndarray, hist: np.ndarray, feats: np.ndarray, items: np.ndarray, weights: np.ndarray
    ) -> None:
        dev, d, b = self._device, self.n_factors, len(items)
        # candidates: the batch's items and uniform draws from the live items
        s = self.n_negatives
        live = np.flatnonzero(self._item_visible[: self.n_items])
        neg = live[torch.randint(len(live), (s,), generator=self._gen).numpy()] if s else live[:0]
        cand, cand_local = np.unique(np.concatenate([items, neg]), return_inverse=True)
        target = cand_local[:b]
        valid_hist = hist >= 0
        rows, local = np.unique(np.concatenate([cand, hist[valid_hist]]), return_inverse=True)
        m = len(rows)
        # item tower of every item involved, with gradients into the rows used
        leaves: dict[str, tuple[np.ndarray | None, torch.Tensor]] = {}
        gate = torch.from_numpy(self._gate(rows).astype(np.float32)).to(dev)
        e, eb = self._leaf("item", rows), self._leaf("item_bias", rows)
        leaves["item"], leaves["item_bias"] = (rows, e), (rows, eb)
        x = gate[:, None] * e
        bias = gate * eb[:, 0]
        for kind, matrix in (("tag", self._item_tags), ("token", self._item_tokens)):
            pooled = self._content(kind, matrix[rows], leaves)  # type: ignore[arg-type]
            if pooled is not None:
                x = x + pooled[0]
                bias = bias + pooled[1]
        # user tower
        hist_local = np.full(hist.shape, m, dtype=np.int64)
        hist_local[valid_hist] = local[len(cand) :]
        x_ext = torch.cat([x, torch.zeros((1, d), dtype=x.dtype, device=dev)])
        dense = {name: self._leaf(name, None) for name in self._dense_names()}
        leaves.update({name: (None, t) for name, t in dense.items()})
        valid_feat = feats >= 0
        feat_vecs = None
        if valid_feat.any():
            f_rows, f_local = np.unique(feats[valid_feat], return_inverse=True)
            f_index = np.full(feats.shape, len(f_rows), dtype=np.int64)
            f_index[valid_feat] = f_local
            fv = self._leaf("feature", f_rows)
            leaves["feature"] = (f_rows, fv)
            fv_ext = torch.cat([fv, torch.zeros((1, d), dtype=fv.dtype, device=dev)])
            feat_vecs = fv_ext[torch.from_numpy(f_index).to(dev)].sum(1)
        z = _user_tower(
            x_ext[torch.from_numpy(hist_local).to(dev)], torch.from_numpy(valid_hist).to(dev), feat_vecs, dense
        )
        # sampled softmax with logQ correction; the user's own items are no negatives
        xc, bc = x[local[: len(cand)]], bias[local[: len(cand)]]
        events = self._item_events
        total = max(float(events.sum()), 1.0)
        logq = np.log(b * events[cand] / total + s / len(live) + _EPS)
        logits = z @ xc.T + (bc - torch.from_numpy(logq.astype(np.float32)).to(dev))[None, :]
        mask = (hist[:, :, None] == cand[None, None, :]).any(1)
        same = (users[:, None] == users[None, :]) & (target[:, None] != target[None, :])
        r, c = np.nonzero(same)
        mask[r, target[c]] = True
        mask[np.arange(b), target] = False
        logits = logits.masked_fill(torch.from_numpy(mask).to(dev), float("-inf"))
        w = torch.from_numpy(weights).to(dev)
        ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(target).to(dev), reduction="none")
        loss = (w * ce).sum() / w.sum()
        loss.backward()
        self._ann.mark(rows)  # the items trained (shared tags and words move others a little: see ann_min_items)
        with torch.no_grad():
            for name, (idx, leaf) in leaves.items():
                grad = leaf.grad
                if grad is None:
                    continue
                if self.l2 and idx is not None:
                    grad = grad + self.l2 * leaf.detach()
                self._adagrad(name, idx, grad)

    def _dense_names(self) -> tuple[str, ...]:
        return ("position", "mix", "hidden_in", "hidden_bias", "hidden_out") if self.hidden else ("position", "mix")

    def _adagrad(self, name: str, rows: np.ndarray | None, grad: torch.Tensor) -> None:
        table, acc, decay = self._tables[name], self._acc[name], self.adagrad_decay
        if rows is None:
            if decay < 1.0:
                acc *= decay
            acc += grad * grad
            table -= self.lr * grad / (acc.sqrt() + _EPS)
            return
        r = torch.from_numpy(rows).to(self._device)
        a = (acc[r] * decay if decay < 1.0 else acc[r]) + grad * grad
        acc[r] = a
        table[r] = table[r] - self.lr * grad / (a.sqrt() + _EPS)

    # -- caches and scoring ----------------------------------------------------------

    @torch.no_grad()
    def _item_output64(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Item tower output and bias of item ``rows`` in ``float64`` (no gradients).

        Each row is computed on its own (a product by a sparse row of content
        weights), so a row's value does not depend on the other rows computed with it.
        """
        r = torch.from_numpy(rows).to(self._device)
        gate = self._gate(rows)
        x = gate[:, None] * self._tables["item"][r].to("cpu", torch.float64).numpy()
        bias = gate * self._tables["item_bias"][r, 0].to("cpu", torch.float64).numpy()
        for kind, matrix in (("tag", self._item_tags), ("token", self._item_tokens)):
            part = matrix[rows]
            valid = part >= 0
            if not valid.any():
                continue
            count = valid.sum(1)
            weights = np.repeat(1.0 / np.maximum(count, 1), count)
            indptr = np.concatenate([[0], np.cumsum(count)])
            n_vocab = self._rows[kind]
            content = sp.csr_array((weights, part[valid], indptr), shape=(len(rows), n_vocab))
            x += content @ self._tables[kind][:n_vocab].to("cpu", torch.float64).numpy()
            bias += content @ self._tables[f"{kind}_bias"][:n_vocab, 0].to("cpu", torch.float64).numpy()
        return x, bias

    def _mark_stale(self, rows: np.ndarray) -> None:
        """The cached outputs of item ``rows`` no longer hold (their rows, content or gate changed)."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[rows < len(self._x64_epoch)]
        self._x64_epoch[rows] = -1
        self._ann.mark(rows)
        self._items_dev = None

    def _refresh_rows(self, rows: np.ndarray) -> None:
        """Bring the ``float64`` cached outputs of item ``rows`` up to date (only those)."""
        n = self.n_items
        if len(self._x64_epoch) < n:
            self._x64 = self._grown(self._x64, n)
            self._b64 = self._grown(self._b64, n)
            self._x64_epoch = self._grown(self._x64_epoch, n, fill=-1)
        rows = np.asarray(rows, dtype=np.int64)
        stale = rows[self._x64_epoch[rows] != self._epoch]
        if len(stale):
            stale = np.unique(stale)
            x, b = self._item_output64(stale)
            self._x64[stale] = x
            self._b64[stale] = b
            self._x64_epoch[stale] = self._epoch
            self._items_dev = None

    def _refresh(self) -> None:
        """Bring the ``float64`` caches of item outputs and dense parameters up to date."""
        self._refresh_rows(np.arange(self.n_items))
        self._refresh_dense()

    def _refresh_dense(self) -> None:
        """Bring the ``float64`` copies of the dense parameters up to date."""
        if self._dense64 is None:
            self._dense64 = {
                name: self._tables[name].detach().to("cpu", torch.float64).numpy()
                for name in (*self._dense_names(), "feature")
            }
            self._dense64["feature"] = self._dense64["feature"][: self._rows["feature"]]
            self._dense64["position"] = self._dense64["position"][0]
            self._dense64["weights"] = _recency_weights(self._dense64["position"])

    def _user_vector(self, x: int, hour: int) -> np.ndarray:
        """``f(u)`` of user row ``x`` (``-1``: unknown) in ``float64``, from the caches."""
        dense = self._dense64
        assert dense is not None
        z = np.zeros(self.n_factors, dtype=np.float64)
        if x >= 0:
            recent = self._hist[x]  # most recent last, -1 (none) only before the first item
            length = int(np.count_nonzero(recent >= 0))
            if length:
                z = (dense["weights"][length] @ self._x64[recent]) @ dense["mix"]
            f = self._feats[x]
            f = f[f >= 0]
            if len(f):
                z = z + dense["feature"][f].sum(0)
        if hour >= 0:
            z = z + dense["feature"][hour]
        if self.hidden:
            z = z + np.maximum(z @ dense["hidden_in"] + dense["hidden_bias"][0], 0.0) @ dense["hidden_out"]
        return z

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Candidates from the item index, scored exactly (``None`` below ``ann_min_items`` items)."""
        n = self.n_items
        if n < self.ann_min_items:
            return None
        self._refresh_dense()
        recent = self._hist[u[u >= 0]]
        self._refresh_rows(recent[recent >= 0])
        hour = self._hour_feature(self.last_timestamp, add=False)
        vectors = np.stack([self._user_vector(x, hour) for x in u.tolist()])
        queries = np.hstack([vectors, np.ones((len(u), 1))]).astype(np.float32)
        live = None if not self.item_index.n_free else self._live_item_rows
        found = self._ann.search(queries, 2 * max(want) + 50, self._index_vectors, n, live)
        if found is None:
            return None
        self._refresh_rows(np.concatenate(found))
        return [
            (rows, dot_scores(vectors[r : r + 1], self._x64[rows], self._b64[rows])[0]) for r, rows in enumerate(found)
        ]

    def _index_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The index's vectors of item ``rows``: their current outputs and biases."""
        self._refresh_rows(rows)
        return np.hstack([self._x64[rows], self._b64[rows, None]]).astype(np.float32)

    def _score(self, u: np.ndarray) -> np.ndarray:
        self._refresh()
        n = self.n_items
        hour = self._hour_feature(self.last_timestamp, add=False)
        vectors = np.stack([self._user_vector(x, hour) for x in u.tolist()])
        return dot_scores(vectors, self._x64[:n], self._b64[:n])

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        """For each recommended item, the recent item of the user that adds most to its score."""
        dense = self._dense64
        out: list[list[str | None]] = []
        for x, row, length in zip(u.tolist(), idx.tolist(), lengths, strict=True):
            recent = self._hist[x] if x >= 0 else np.zeros(0, dtype=np.int64)
            valid = recent >= 0
            if not length or not valid.any() or dense is None:
                out.append([None] * length)
                continue
            logits = dense["position"][valid]
            w = np.exp(logits - logits.max())
            w /= w.sum()
            parts = (w[:, None] * self._x64[recent[valid]]) @ dense["mix"] @ self._x64[row[:length]].T
            best = recent[valid][np.argmax(parts, axis=0)]
            out.append(self.item_index.ids_of(best))
        return out

    @torch.no_grad()
    def topk_device(
        self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item indices and scores per user, ranked on the model's device.

        The user tower runs on the device for the whole batch (``float32``),
        then one product with the cached item outputs and one
        ``torch.topk``. Row ``n`` holds item indices (map them with
        ``item_index.ids_of``) and scores for ``users[n]``, with index ``-1``
        and score ``-inf`` past the eligible items. Scores agree with
        :meth:`recommend` up to ``float32`` rounding.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        u = self.user_index.lookup([str(x) for x in users])
        dev, n = self._device, self.n_items
        k = min(k, n)
        if k == 0 or len(u) == 0:
            empty = torch.empty((len(u), 0), device=dev)
            return empty.long(), empty
        self._refresh()
        if self._items_dev is None or self._items_dev[0].shape[0] != n:
            self._items_dev = (
                torch.from_numpy(self._x64[:n]).to(dev, torch.float32),
                torch.from_numpy(self._b64[:n]).to(dev, torch.float32),
            )
        x, b = self._items_dev
        known = u >= 0
        hist = np.where(known[:, None], self._hist[np.maximum(u, 0)], -1)
        feats = np.where(known[:, None], self._feats[np.maximum(u, 0)], -1)
        hour = self._hour_feature(self.last_timestamp, add=False)
        feats = np.concatenate([feats, np.full((len(u), 1), hour, dtype=np.int64)], axis=1)
        valid = hist >= 0
        x_ext = torch.cat([x, torch.zeros((1, self.n_factors), dtype=x.dtype, device=dev)])
        recent = x_ext[torch.from_numpy(np.where(valid, hist, n)).to(dev)]
        f_table = self._tables["feature"]
        f_ext = torch.cat([f_table[: self._rows["feature"]], f_table.new_zeros((1, self.n_factors))])
        features = f_ext[torch.from_numpy(np.where(feats >= 0, feats, self._rows["feature"])).to(dev)].sum(1)
        dense = {name: self._tables[name] for name in self._dense_names()}
        scores = torch.addmm(b, _user_tower(recent, torch.from_numpy(valid).to(dev), features, dense), x.T)
        if self.item_index.n_free:
            scores[:, torch.from_numpy(self.item_index.free_rows()).to(dev)] = float("-inf")
        if exclude_seen:
            rows = [r for r, x_ in enumerate(u.tolist()) if x_ >= 0 for _ in self._seen[x_]]
            cols = [i for x_ in u.tolist() if x_ >= 0 for i in self._seen[x_]]
            if rows:
                scores[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)] = float("-inf")
        values, idx = torch.topk(scores, k, dim=1)
        idx[torch.isneginf(values)] = -1
        return idx, values

    # -- forgetting ------------------------------------------------------------------

    def _keep_buffered(self, keep: np.ndarray) -> None:
        """Keep the buffered events where ``keep`` (over the first ``_n_buffered`` rows) is True."""
        n = self._n_buffered
        k = int(keep.sum())
        for buf in (self._buf_user, self._buf_hist, self._buf_feats, self._buf_item, self._buf_weight):
            buf[:k] = buf[:n][keep]
        self._n_buffered = k

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Erase the users' recent items, features and buffered events (no table is per user)."""
        self._hist[rows] = -1
        self._feats[rows] = -1
        self._keep_buffered(~np.isin(self._buf_user[: self._n_buffered], rows))

    @torch.no_grad()
    def _forget_item_rows(self, rows: np.ndarray) -> None:
        r = torch.from_numpy(rows).to(self._device)
        for name in ("item", "item_bias"):
            self._tables[name][r] = 0.0
            self._acc[name][r] = 0.0
        self._uninitialised.update(rows.tolist())  # the row starts from its next id's initial row
        for array in (self._item_tags, self._item_tokens):
            array[rows] = -1
        self._item_events[rows] = 0.0
        self._item_trained[rows] = 0.0
        self._item_visible[rows] = False
        n = self._n_buffered
        for windows in (self._hist, self._buf_hist[:n]):
            _drop_from_windows(windows, rows)
        self._keep_buffered(~np.isin(self._buf_item[:n], rows))
        self._mark_stale(rows)
        self._ann.drop(rows)

    # -- sharing across workers ------------------------------------------------------
    # item rows and dense weights are shared by the base class as increments (asynchronous
    # SGD); vocabularies (tags, title words, user features) by name here; a user's recent
    # items and features move with the user; buffered events train where they arrived

    _item_vectors = _table_property("table", "item")
    _item_biases = _table_property("table", "item_bias")
    _item_vectors_adagrad = _table_property("acc", "item")
    _item_biases_adagrad = _table_property("acc", "item_bias")
    _dense_position = _table_property("table", "position")
    _dense_mix = _table_property("table", "mix")
    _dense_hidden_in = _table_property("table", "hidden_in")
    _dense_hidden_bias = _table_property("table", "hidden_bias")
    _dense_hidden_out = _table_property("table", "hidden_out")
    _dense_position_adagrad = _table_property("acc", "position")
    _dense_mix_adagrad = _table_property("acc", "mix")
    _dense_hidden_in_adagrad = _table_property("acc", "hidden_in")
    _dense_hidden_bias_adagrad = _table_property("acc", "hidden_bias")
    _dense_hidden_out_adagrad = _table_property("acc", "hidden_out")

    def _initial_item_rows(self, name: str, ids: list[str]) -> np.ndarray:
        if name == "_item_vectors":
            return self._initial_rows("item", ids)
        return super()._initial_item_rows(name, ids)

    def drop_users(self, users: Any) -> int:
        """Hand ``users`` off to another worker (see :meth:`OnlineRecommender.drop_users`).

        Their recent items and features go; their buffered events stay, without
        their user row, and train here with the rest of the buffer.
        """
        rows = self.user_index.lookup([str(u) for u in users])
        rows = np.unique(rows[rows >= 0])
        n = self._n_buffered
        if len(rows) and n:
            buffered = self._buf_user[:n]
            hit = np.isin(buffered, rows)
            buffered[hit] = -2 - buffered[hit]  # still one negative id per user: their items stay no negatives
        return super().drop_users(users)

    def _vocab_now(self, kind: str) -> dict[str, np.ndarray]:
        """Copies of the tables (and Adagrad sums) of vocabulary ``kind``, by key."""
        n = self._rows[_VOCABS[kind][0]]
        out = {}
        for name in _VOCABS[kind]:
            out[name] = self._tables[name][:n].detach().to("cpu", copy=True).numpy()
            out[f"{name}.adagrad"] = self._acc[name][:n].detach().to("cpu", copy=True).numpy()
        return out

    def _vocab_base_rows(self, kind: str) -> dict[str, np.ndarray]:
        """The vocabulary's tables as of the last delta; rows added since start from their initial values."""
        if self._vocab_base is None:
            self._vocab_base = {}
        base = self._vocab_base
        ids = self._index_of(_VOCABS[kind][0]).ids
        n = self._rows[_VOCABS[kind][0]]
        for name in _VOCABS[kind]:
            for key in (name, f"{name}.adagrad"):
                have = base.get(key)
                width = 1 if name.endswith("_bias") else self.n_factors
                if have is None:
                    have = np.zeros((0, width), dtype=np.float32)
                if len(have) < n:
                    new = ids[len(have) : n]
                    start = self._initial_rows(name, new) if key == name else np.zeros((len(new), width), np.float32)
                    have = np.concatenate([have, start])
                base[key] = have
        return base

    def _begin_sharing_extra(self) -> None:
        self._vocab_base = {}
        for kind in _VOCABS:
            self._vocab_base.update(self._vocab_now(kind))

    def _take_item_delta_extra(self, delta: ItemDelta) -> None:
        for kind, names in _VOCABS.items():
            n = self._rows[names[0]]
            if not n:
                continue
            base, now = self._vocab_base_rows(kind), self._vocab_now(kind)
            diffs = {key: value - base[key][:n] for key, value in now.items()}
            changed = np.zeros(n, dtype=bool)
            for diff in diffs.values():
                changed |= diff.any(axis=1)
            rows = np.flatnonzero(changed)
            if len(rows):
                delta.extra[f"two_tower.{kind}"] = self._index_of(names[0]).ids_of(rows)
                for key, diff in diffs.items():
                    delta.extra_arrays[f"two_tower.{key}"] = diff[rows]
            base.update(now)

    def _merge_item_deltas_extra(self, deltas: list[ItemDelta], merged: ItemDelta) -> None:
        """Sum the vocabularies' rows (tag, title word and feature embeddings) by id, as item rows are."""
        for kind, names in _VOCABS.items():
            keys = [f"two_tower.{key}" for name in names for key in (name, f"{name}.adagrad")]
            held = [
                ItemDelta(d.model, d.extra[f"two_tower.{kind}"], {k: d.extra_arrays[k] for k in keys})
                for d in deltas
                if d.extra.get(f"two_tower.{kind}")
            ]
            if not held:
                continue
            ids, arrays, _ = sum_item_rows(held)
            if ids:
                merged.extra[f"two_tower.{kind}"] = ids
                merged.extra_arrays.update(arrays)

    def _negate_item_delta_extra(self, delta: ItemDelta) -> None:
        for key in [k for k in delta.extra_arrays if k.startswith("two_tower.")]:
            delta.extra_arrays[key] = -delta.extra_arrays[key]

    def _export_items_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        for kind, names in _VOCABS.items():
            n = self._rows[names[0]]
            if n:
                delta.extra[f"two_tower.{kind}"] = self._index_of(names[0]).ids[:n]
                for key, value in self._vocab_now(kind).items():
                    delta.extra_arrays[f"two_tower.{key}"] = value
        for kind, matrix, index in (
            ("tag", self._item_tags, self.tag_index),
            ("token", self._item_tokens, self.token_index),
        ):
            part = matrix[rows]
            if (part >= 0).any():
                delta.extra[f"two_tower.{kind}_of_items"] = [index.ids_of(r[r >= 0]) for r in part]
        delta.extra_arrays["two_tower.visible"] = self._item_visible[rows].copy()

    def _apply_item_delta_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        absolute = bool(delta.extra.get("absolute"))
        self._caches_stale = bool(delta.globals) or absolute
        for kind, names in _VOCABS.items():
            ids = delta.extra.get(f"two_tower.{kind}")
            if not ids:
                continue
            self._caches_stale = True
            index = self._index_of(names[0])
            local = index.add_many(ids)
            for name in names:
                self._grow_table(name, len(index))
            base = self._vocab_base_rows(kind)
            r = torch.from_numpy(local).to(self._device)
            for name in names:
                for key, store in ((name, self._tables), (f"{name}.adagrad", self._acc)):
                    values = delta.extra_arrays[f"two_tower.{key}"]
                    if absolute:
                        store[name][r] = torch.from_numpy(values).to(self._device)
                        base[key][local] = values
                    else:
                        store[name].index_add_(0, r, torch.from_numpy(values).to(self._device))
                        base[key][local] += values
        if absolute:
            items = np.asarray(delta.items, dtype=object)
            for kind in ("tag", "token"):
                content = delta.extra.get(f"two_tower.{kind}_of_items")
                if content is not None:
                    has = np.array([bool(c) for c in content], dtype=bool)
                    self._set_content(items[has], [tuple(c) for c, ok in zip(content, has, strict=True) if ok], kind)
            self._item_visible[rows] = delta.extra_arrays["two_tower.visible"]
        elif "_item_events" in delta.arrays:  # an item another worker learned an event of is a negative here too
            self._item_visible[rows[delta.arrays["_item_events"] > 0]] = True

    def _after_item_change(self, rows: np.ndarray) -> None:
        if self._caches_stale:  # dense weights or vocabularies changed: every item output
            self._epoch += 1
            self._dense64 = None
        self._mark_stale(rows)

    def _export_user_extra(self, rows: np.ndarray) -> dict[str, Any]:
        names = self.feature_index.ids
        return {"two_tower_features": [[names[f] if f >= 0 else None for f in self._feats[r].tolist()] for r in rows]}

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        for row, features in zip(rows.tolist(), extra.get("two_tower_features") or [None] * len(rows), strict=True):
            if features is not None:
                self._feats[row] = [self._feature(f) if f is not None else -1 for f in features]

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        nu, ni, nb = self.n_users, self.n_items, self._n_buffered

        def copy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().to("cpu", copy=True).numpy()

        arrays = {}
        for name, table in self._tables.items():
            rows = self._rows.get(name, table.shape[0])
            arrays[f"table.{name}"] = copy(table[:rows])
            arrays[f"adagrad.{name}"] = copy(self._acc[name][:rows])
        return {
            **arrays,
            "item_tags": self._item_tags[:ni].copy(),
            "item_tokens": self._item_tokens[:ni].copy(),
            "item_events": self._item_events[:ni].copy(),
            "item_trained": self._item_trained[:ni].copy(),
            "item_visible": self._item_visible[:ni].copy(),
            "recent_items": self._hist[:nu].copy(),
            "user_features": self._feats[:nu].copy(),
            "buffer_user": self._buf_user[:nb].copy(),
            "buffer_recent": self._buf_hist[:nb].copy(),
            "buffer_features": self._buf_feats[:nb].copy(),
            "buffer_item": self._buf_item[:nb].copy(),
            "buffer_weight": self._buf_weight[:nb].copy(),
            "generator_state": copy(self._gen.get_state()),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        dev = self._device
        for name in self._tables:
            self._tables[name] = torch.from_numpy(np.array(arrays[f"table.{name}"], dtype=np.float32)).to(dev)
            self._acc[name] = torch.from_numpy(np.array(arrays[f"adagrad.{name}"], dtype=np.float32)).to(dev)
            if name in self._rows:
                self._rows[name] = self._tables[name].shape[0]
        ni, nu = self.n_items, self.n_users
        self._item_tags = self._grown(arrays["item_tags"].astype(np.int64), ni, fill=-1)
        self._item_tokens = self._grown(arrays["item_tokens"].astype(np.int64), ni, fill=-1)
        self._item_events = self._grown(arrays["item_events"].astype(np.float64), ni)
        self._item_trained = self._grown(arrays["item_trained"].astype(np.float64), ni)
        self._item_visible = self._grown(arrays["item_visible"].astype(bool), ni, fill=False)
        self._hist = self._grown(arrays["recent_items"].astype(np.int64), nu, fill=-1)
        self._feats = self._grown(arrays["user_features"].astype(np.int64), nu, fill=-1)
        nb = len(arrays["buffer_item"])
        self._buf_user[:nb] = arrays["buffer_user"]
        self._buf_hist[:nb] = arrays["buffer_recent"]
        self._buf_feats[:nb] = arrays["buffer_features"]
        self._buf_item[:nb] = arrays["buffer_item"]
        self._buf_weight[:nb] = arrays["buffer_weight"]
        self._n_buffered = nb
        self._gen.set_state(torch.from_numpy(np.array(arrays["generator_state"], dtype=np.uint8)))
        self._uninitialised = set()  # _load_extra_meta adds the free rows: they start from their next id
        self._epoch += 1
        self._dense64 = None
        self._items_dev = None
        self._ann.reset()

    def _extra_meta(self) -> dict[str, Any]:
        return {"tags": self.tag_index.ids, "tokens": self.token_index.ids, "features": self.feature_index.ids}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self.tag_index = IdIndex(extra.get("tags", []))
        self.token_index = IdIndex(extra.get("tokens", []))
        self.feature_index = IdIndex(extra.get("features", []))
        self._feature_rows = {}
        self._hour_rows = [-1] * 24
        self._uninitialised = set(self.item_index.free_rows().tolist())

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"device": "cpu", "seed": 3},
            {
                "n_factors": 8,
                "micro_batch": 7,
                "n_steps": 2,
                "n_negatives": 8,
                "id_ramp": 2.0,
                "hidden": 8,
                "adagrad_decay": 0.99,
                "use_hour": True,
                "learn_repeats": False,
                "device": "cpu",
                "seed": 4,
            },
            {"device": "cpu", "seed": 3, "ann_min_items": 1},  # lists from the item index
        ]


def _push(recent: np.ndarray, item: int) -> None:
    """Make ``item`` the most recent of the window ``recent`` (most recent last), without duplicates."""
    if item in recent:
        p = int(np.flatnonzero(recent == item)[0])
        recent[p:-1] = recent[p + 1 :]
    else:
        recent[:-1] = recent[1:]
    recent[-1] = item


def _drop_from_windows(windows: np.ndarray, items: np.ndarray) -> None:
    """Remove ``items`` from the rows of ``windows`` (most recent last), keeping them right-aligned."""
    hit = np.isin(windows, items)
    for r in np.flatnonzero(hit.any(1)).tolist():
        kept = windows[r][(windows[r] >= 0) & ~hit[r]]
        windows[r] = -1
        if len(kept):
            windows[r, -len(kept) :] = kept


def _recency_weights(logits: np.ndarray) -> np.ndarray:
    """Row ``L``: the softmax of ``logits`` over the last ``L`` positions (zero elsewhere)."""
    n = len(logits)
    out = np.zeros((n + 1, n), dtype=np.float64)
    for length in range(1, n + 1):
        part = logits[n - length :]
        w = np.exp(part - part.max())
        out[length, n - length :] = w / w.sum()
    return out


def _user_tower(
    recent: torch.Tensor, valid: torch.Tensor, features: torch.Tensor | None, dense: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``f(u)`` for a batch: recent item vectors (batch x history x d), their mask, summed feature vectors."""
    logits = dense["position"].expand(valid.shape).masked_fill(~valid, -1e9)
    w = torch.softmax(logits, dim=1) * valid.to(recent.dtype)
    z = (w[:, :, None] * recent).sum(1) @ dense["mix"]
    if features is not None:
        z = z + features
    if "hidden_in" in dense:
        z = z + torch.relu(z @ dense["hidden_in"] + dense["hidden_bias"]) @ dense["hidden_out"]
    return z
