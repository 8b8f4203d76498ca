"""A self-attentive next-item model (SASRec-style) in torch, trained online on growing tables.

:class:`SASRec` scores the next item of a user from their last ``max_len``
items, as SASRec does (Kang and McAuley, *Self-attentive sequential
recommendation*, ICDM 2018): one causal attention head whose query is the
newest position, learned position terms, and item embeddings shared between
the input and the output. It is trained as GRU4Rec is (Hidasi et al., 2016
and 2018): a cross-entropy over the micro-batch's targets plus items sampled
in proportion to ``count ** sample_alpha``, with the logQ correction of the
sampling, and Adagrad on the rows a step touches.

Why this shape (measured on the development parts of both logs; see
``docs/tuning/sasrec.md``): learning online means one pass over the events,
and every extra layer must learn from that pass alone.

- A GRU4Rec (one GRU layer, the hidden state carried per user and trained
  through one step, as GRU4Rec trains) reached HR@10 0.172 (MovieLens) and
  0.185 (YOOCHOOSE) at best, below item-kNN (0.188 and 0.195). Recomputing
  its states from the whole history with the current weights changed
  nothing: it had learned to remember about the last item, and lost to
  item-kNN on users with five or more events.
- A full SASRec block (query/key/value projections, feed-forward layer,
  layer norms) learned too slowly in one pass: 0.157 on MovieLens.
- What works is the attention itself with values that are the item
  embeddings: a user's vector is a learned weighting of the embeddings of
  their recent items, so a list is "items like the ones you just had", with
  the weights learned by position (recency: sequence order matters on both
  logs) and by content (a query from the newest item; it adds little on
  these logs). Starting the position terms at a recency decay gives a model
  that is useful from the first events and that learning refines. With the
  chosen defaults: 0.202 and 0.209.

Per event the work is small and does not grow with the history: learning an
event shifts the user's window and buffers a training example; recommending
computes the user's vector from their window (a few NumPy operations on a
``max_len x n_factors`` array, cached until the window or the weights change)
and multiplies it with the item table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional

from models.base import Interactions, OnlineRecommender
from models.devices import resolve_device
from models.retrieval import ItemVectorIndex
from models.scoring import dot_scores
from models.sharing import id_rows
from models.torch_mf import _ensure_rows

__all__ = ["SASRec"]

_EPS = 1e-6
_BUFFER = (("users", np.int64), ("windows", np.int64), ("targets", np.int64), ("weights", np.float32))


def _layout(d: int, length: int) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """Where each attention weight lies in the flat weight vector: ``name -> (start, stop, shape)``.

    ``pos_bias`` is the attention logit of each position, ``pos`` a position
    embedding added to the keys, ``wq`` and ``wk`` the query and key
    projections (positions run oldest to newest; the newest is last).
    """
    shapes = {"pos_bias": (length,), "pos": (length, d), "wq": (d, d), "wk": (d, d), "wv": (d, d)}
    layout, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        layout[name] = (start, start + size, shape)
        start += size
    return layout


def _views(flat: Any, layout: dict[str, tuple[int, int, tuple[int, ...]]]) -> dict[str, Any]:
    """The attention weights as views of a flat tensor or array."""
    return {name: flat[a:b].reshape(shape) for name, (a, b, shape) in layout.items()}


class _Gather(torch.autograd.Function):
    """``table[index]`` whose gradient is summed per row deterministically.

    The backward of plain indexing accumulates with ``index_put_``, which the
    torch documentation lists as nondeterministic on the CPU; here the CPU
    sums with ``index_add_`` (sequential) and CUDA with
    ``index_put_(accumulate=True)`` (sort-based there), as
    :mod:`models.torch_mf` does.
    """

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return table[index]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.rows, *grad.shape[1:]))
        if out.device.type == "cpu":
            out.index_add_(0, index, grad)
        else:
            out.index_put_((index,), grad, accumulate=True)
        return out, None


def _rank_in_user(u: np.ndarray) -> np.ndarray:
    """For events of users ``u`` in arrival order: how many earlier events of the same user the batch holds."""
    order = np.argsort(u, kind="stable")
    su = u[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    return rank


class SASRec(OnlineRecommender):
    """Next-item recommendation by self-attention over each user's last items, learned online.

    A user's window holds their last ``max_len`` items, oldest first. Their
    vector is the attention-weighted mean of the window's item embeddings,

    .. math:: s_u = \\sum_k a_k e_{w_k}, \\quad
              a = \\mathrm{softmax}_k\\big(c_k + (e_{w_k} W_k + p_k) \\cdot (W_q e_{w_{new}}) / \\sqrt{d}\\big),

    (times a learned ``W_v`` with ``value_projection``), and item ``j``
    scores ``<s_u, e_j> + b_j``. ``c_k`` (one logit per
    position counted from the newest) starts at ``k * log(recency)``, so an
    untrained model weighs the newest item most and older ones geometrically
    less; ``W_q``, ``W_k`` and ``p`` (the content part, off with
    ``content_attention=False``) start near zero. Users never seen, and
    forgotten users, score ``b`` alone (learned popularity).

    **Per event.** Learning an event appends its item to the user's window at
    once, so the very next list of the user reflects it, and buffers the
    training example (window before the event, item). A user's vector is
    computed from their window with the current weights when first needed
    (NumPy, float64, one user at a time) and cached until their window or
    the weights change; scores are float64 products rounded to float32
    (:func:`models.scoring.dot_scores`), so a user's list does not depend on
    the other users in a call.

    **Training (the lag).** Every ``batch_size`` buffered examples the model
    takes ``n_steps`` Adagrad steps on them: cross-entropy of each target
    against the batch's targets and ``n_negatives`` items drawn with
    probability ``count ** sample_alpha``, each candidate's logit lowered by
    ``logq * log(expected draws)`` (when the catalogue has at most
    ``n_negatives`` live items: the full softmax, uncorrected). So the
    weights reflect an event after at most ``batch_size - 1`` further
    examples; a user's first event has no window and gives no example.
    Item rows (embedding and bias) learn at ``lr``, the attention weights at
    ``attention_lr``.

    **Devices and determinism.** Tables and training steps live on
    ``device`` (CUDA when available); the per-event path reads float64 NumPy
    copies of the weights, refreshed after each step. An item's initial row
    is a function of the seed and its id (:func:`models.sharing.id_rows`) and
    negatives come from a seeded CPU generator, so on the CPU the same seed
    gives the same model; on CUDA, gradients are summed by index with
    deterministic kernels and runs agree with the CPU up to float rounding.
    The item table grows with capacity doubling, its Adagrad sums with it.

    **Several workers** (:mod:`models.sharing`). A user's window moves with
    the user (``export_users``); their waiting examples stay and train where
    they arrived. The item table (embeddings and biases), the attention
    weights, their Adagrad sums and the item counts are shared as the changes
    since the last delta, which every other worker adds: asynchronous SGD, as
    with a parameter server. A worker's steps read item rows that lack the
    others' latest changes, so ``sharing_is_exact`` is false: counts add up
    exactly, trained rows approximately (``tests/models/test_sharing.py``
    states the tolerance: HR@10 within 0.03 of one model's on a generated log).

    Parameters
    ----------
    n_factors
        Size of the item embeddings.
    max_len
        Items per user window (the sequence the attention reads).
    recency
        Initial attention ratio between consecutive positions, in ``(0, 1]``.
    content_attention
        Learn query/key attention on top of the position terms.
    value_projection
        Map the attention's output by a learned matrix ``W_v`` (starting at
        the identity), so that scores can tell "j follows i" from "i follows
        j" (off by default: it ranked lower on both development logs).
    lr
        Adagrad learning rate of the item embeddings and biases.
    attention_lr
        Adagrad learning rate of the attention weights.
    batch_size
        Training examples per step (the largest lag of the weights).
    n_negatives
        Items sampled per step besides the batch's targets.
    sample_alpha
        Exponent of item counts in the sampling distribution (0: uniform
        over the items with events, 1: by popularity).
    logq
        Weight of the logQ correction (0: none).
    n_steps
        Gradient steps per buffered batch (negatives are redrawn each step).
    init_std
        Standard deviation of new embedding rows.
    repeat_cap
        An event whose item already fills this many slots of the user's
        window trains nothing and counts for no sampling (the window still
        moves): one user repeating one item cannot push it to everybody.
        With 3, one user's 1,500 clicks on an item among 5,000 ordinary
        events left it out of a new user's top 50 (without: rank 6 to 23),
        and HR@10 on the YOOCHOOSE sample moved from 0.2124 to 0.2132.
        ``None``: no cap.
    ann_min_items
        From this many item rows on, a list ranks the candidates an item index
        (:class:`models.retrieval.ItemVectorIndex`, kept current after every
        training step) retrieves, with their exact scores, instead of scoring
        every item.
    ann_nprobe
        Inverted lists the item index scans per list (recall and cost grow with it).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
    seed
        Seed of the initial weights and of the negatives.

    Examples
    --------
    Users walk a cycle ``i0 -> i1 -> ... -> i5 -> i0``. With the value
    projection the model learns which item follows which: after ``i1, i2`` it
    puts ``i3`` first. (Without it, the default, a score is a similarity to
    the recent items, which cannot tell ``i3``, after ``i2``, from ``i0``,
    before ``i1``; on both development logs the default ranks better.)

    >>> model = SASRec(n_factors=16, value_projection=True, batch_size=16, n_negatives=8, device="cpu", seed=0)
    >>> for epoch in range(12):
    ...     users = [f"u{epoch}-{s}" for s in range(6) for _ in range(6)]
    ...     items = [f"i{(s + t) % 6}" for s in range(6) for t in range(6)]
    ...     model.learn(Interactions.from_columns(users, items))
    >>> model.learn(Interactions.from_columns(["ann", "ann"], ["i1", "i2"]))
    >>> model.recommend(["ann"], k=1).items
    [['i3']]
    """

    name: ClassVar[str] = "sasrec"
    shares_state: ClassVar[bool] = True
    sparse_rest_zero: ClassVar[bool] = False  # lists rank the item index's candidates
    sharing_is_exact: ClassVar[bool] = False  # asynchronous SGD (see "Several workers")
    _user_arrays: ClassVar[tuple[str, ...]] = ("_win",)
    _user_item_refs: ClassVar[tuple[str, ...]] = ("_win",)
    item_changes_tracked: ClassVar[bool] = True  # learned items, and the rows each step trains (noted)
    _item_arrays: ClassVar[tuple[str, ...]] = ("_e", "_e_acc", "_counts")
    merges_item_deltas: ClassVar[bool] = True
    _global_arrays: ClassVar[tuple[str, ...]] = ("_w", "_w_acc")

    def __init__(
        self,
        n_factors: int = 64,
        max_len: int = 20,
        recency: float = 0.8,
        content_attention: bool = True,
        value_projection: bool = False,
        lr: float = 0.2,
        attention_lr: float = 0.03,
        batch_size: int = 64,
        n_negatives: int = 512,
        sample_alpha: float = 0.5,
        logq: float = 1.0,
        n_steps: int = 1,
        init_std: float = 0.1,
        repeat_cap: int | None = 3,
        ann_min_items: int = 50_000,
        ann_nprobe: int = 32,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        if repeat_cap is not None and repeat_cap < 1:
            raise ValueError(f"repeat_cap must be >= 1 or None, got {repeat_cap}")
        for name, value in (("n_factors", n_factors), ("max_len", max_len), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if not 0.0 < recency <= 1.0:
            raise ValueError(f"recency must be in (0, 1], got {recency}")
        self.n_factors = n_factors
        self.max_len = max_len
        self.recency = recency
        self.content_attention = content_attention
        self.value_projection = value_projection
        self.lr = lr
        self.attention_lr = attention_lr
        self.batch_size = batch_size
        self.n_negatives = n_negatives
        self.sample_alpha = sample_alpha
        self.logq = logq
        self.n_steps = n_steps
        self.init_std = init_std
        self.repeat_cap = repeat_cap
        self.ann_min_items = ann_min_items
        self.ann_nprobe = ann_nprobe
        self.device = device
        super().__init__(seed=seed)

    # -- state -----------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        """The device holding the tables and running the training steps."""
        return self._device

    def _init_state(self) -> None:
        super()._init_state()
        self._device = resolve_device(self.device)
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(self.seed)
        d, length = self.n_factors, self.max_len
        self._layout = _layout(d, length)
        flat = torch.zeros(max(b for _, b, _ in self._layout.values()))
        w = _views(flat, self._layout)
        w["pos_bias"].copy_(torch.arange(length - 1, -1, -1, dtype=torch.float32) * math.log(self.recency))
        small = 0.1 / math.sqrt(d)  # the content part starts near zero: attention by position first
        w["wq"].copy_((torch.rand((d, d), generator=self._gen) * 2.0 - 1.0) * small)
        w["wk"].copy_((torch.rand((d, d), generator=self._gen) * 2.0 - 1.0) * small)
        w["wv"].copy_(torch.eye(d))
        self._w = flat.to(self._device)  # attention weights, one flat vector (one Adagrad update per step)
        self._w_acc = torch.zeros_like(self._w)
        # item table: columns :d are the embedding (attention input and output), column d the item bias
        self._e = torch.zeros((0, d + 1), dtype=torch.float32, device=self._device)
        self._e_acc = torch.zeros_like(self._e)
        self._n_item_rows = 0
        self._uninitialised: set[int] = set()  # freed item rows: initialised from their next id
        self._counts = np.zeros(0, dtype=np.float64)  # events per item row (the sampling distribution)
        # per user: window of item rows, oldest first, newest at the end, -1 where empty; cached vector
        self._win = np.full((0, length), -1, dtype=np.int64)
        self._vec = np.zeros((0, d), dtype=np.float32)
        self._vec_version = np.zeros(0, dtype=np.int64)
        # training examples waiting for a step: column blocks (users, windows, targets, weights)
        self._buffer: list[tuple[np.ndarray, ...]] = []
        self._n_buffered = 0
        self._version = 0  # training steps so far: cached vectors and the NumPy mirrors are per version
        self._mirror: dict[str, np.ndarray] | None = None
        self._mirror_version = -1
        self._dirty: list[torch.Tensor] = []  # item rows changed by the steps the mirror has not seen
        self._ann = ItemVectorIndex(min_items=self.ann_min_items, nprobe=self.ann_nprobe, seed=self.seed)

    def _new_rows(self, ids: list[str | None]) -> np.ndarray:
        """Initial item rows: the embedding a function of the seed and the id (every worker agrees), bias 0."""
        rows = np.zeros((len(ids), self.n_factors + 1), dtype=np.float32)
        rows[:, : self.n_factors] = id_rows([i or "" for i in ids], self.n_factors, self.seed, self.init_std, "item")
        return rows

    def _grow(self, n_users: int, n_items: int) -> None:
        if n_users > len(self._win):
            self._win = self._grown(self._win, n_users, fill=-1)
            self._vec = self._grown(self._vec, n_users)
            self._vec_version = self._grown(self._vec_version, n_users, fill=-1)
        if n_items > self._n_item_rows:
            self._e = _ensure_rows(self._e, n_items)
            self._e_acc = _ensure_rows(self._e_acc, n_items)
            ids = self.item_index.ids[self._n_item_rows : n_items]
            self._e[self._n_item_rows : n_items] = torch.from_numpy(self._new_rows(ids)).to(self._device)
            self._uninitialised.update(self._n_item_rows + j for j, key in enumerate(ids) if key is None)
            self._ann.mark(np.arange(self._n_item_rows, n_items))
            self._n_item_rows = n_items
            self._counts = self._grown(self._counts, n_items)
        if self._uninitialised:
            self._initialise_reused_rows()

    @torch.no_grad()
    def _initialise_reused_rows(self) -> None:
        """Start the freed item rows that hold an id again from that id's initial row."""
        rows = np.array(sorted(self._uninitialised), dtype=np.int64)
        rows = rows[rows < self.n_items]
        ids = self.item_index.ids_of(rows)
        live = np.array([key is not None for key in ids], dtype=bool)
        if not live.any():
            return
        rows, ids = rows[live], [key for key in ids if key is not None]
        fresh = self._new_rows(ids)
        self._e[torch.from_numpy(rows).to(self._device)] = torch.from_numpy(fresh).to(self._device)
        self._uninitialised.difference_update(rows.tolist())
        self._ann.mark(rows)
        self._note_item_rows(rows)
        if self._mirror is not None:
            mirrored = rows < len(self._mirror["e"])
            self._mirror["e"][rows[mirrored]] = fresh[mirrored, : self.n_factors]
            self._mirror["b"][rows[mirrored]] = fresh[mirrored, -1]

    # -- the per-event path: NumPy copies of the weights -----------------------------

    def _mirrors(self) -> dict[str, np.ndarray]:
        """Float64 CPU copies of the weights: after steps, the rows they changed; new item rows appended."""
        n, d = self.n_items, self.n_factors
        mirror = self._mirror
        if mirror is None:
            mirror = _views(self._w.double().cpu().numpy(), self._layout)
            table = self._e[:n].double().cpu().numpy()
            mirror["e"], mirror["b"] = np.ascontiguousarray(table[:, :d]), table[:, d].copy()
            self._mirror, self._mirror_version, self._dirty = mirror, self._version, []
            return mirror
        if self._mirror_version != self._version:  # copy what the steps changed, not the whole table
            mirror.update(_views(self._w.double().cpu().numpy(), self._layout))
            rows = torch.unique(torch.cat(self._dirty)) if self._dirty else torch.zeros(0, dtype=torch.long)
            rows = rows[rows < len(mirror["e"])]
            if len(rows):
                changed = self._e[rows].double().cpu().numpy()
                at = rows.cpu().numpy()
                mirror["e"][at], mirror["b"][at] = changed[:, :d], changed[:, d]
            self._mirror_version, self._dirty = self._version, []
        if len(mirror["e"]) < n:
            new = self._e[len(mirror["e"]) : n].double().cpu().numpy()
            mirror["e"] = np.concatenate([mirror["e"], new[:, :d]])
            mirror["b"] = np.concatenate([mirror["b"], new[:, d]])
        return mirror

    def _encode(self, window: np.ndarray) -> np.ndarray:
        """The vector of one user's window (float64 arithmetic, float32 result)."""
        m = self._mirrors()
        k = int(np.count_nonzero(window >= 0))  # a window fills from the end
        if k == 0:
            return np.zeros(self.n_factors, dtype=np.float32)
        start = self.max_len - k
        x = m["e"][window[start:]]
        z = m["pos_bias"][start:].copy()
        if self.content_attention:
            keys = x @ m["wk"] + m["pos"][start:]
            z += keys @ (m["wq"] @ x[-1]) / math.sqrt(self.n_factors)
        a = np.exp(z - z.max())
        s = (a / a.sum()) @ x
        if self.value_projection:
            s = m["wv"] @ s
        return s.astype(np.float32)

    def _user_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of user rows ``rows``, one user at a time (cached until their window or the weights change)."""
        out = np.empty((len(rows), self.n_factors), dtype=np.float32)
        version = self._version
        for r, user in enumerate(rows.tolist()):
            if self._vec_version[user] != version:
                self._vec[user] = self._encode(self._win[user])
                self._vec_version[user] = version
            out[r] = self._vec[user]
        return out

    # -- learning --------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        if self._uninitialised:  # an event's item took a freed row
            self._initialise_reused_rows()
        w = np.array(batch.weights, dtype=np.float32)  # a copy: waiting examples must not share the caller's array
        if len(u) == 1:
            self._advance(u, i, w)
            return
        rank = _rank_in_user(u)
        for r in range(int(rank.max()) + 1):  # each user at most once per round, rounds in arrival order
            sel = np.flatnonzero(rank == r)
            self._advance(u[sel], i[sel], w[sel])

    def _advance(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
        """Learn one event of each of the distinct ``users``: buffer the examples, shift the windows."""
        windows = self._win[users]  # a copy
        has = windows[:, -1] >= 0
        if self.repeat_cap is not None:  # a user repeating one item trains nothing more with it
            fresh = (windows == items[:, None]).sum(axis=1) < self.repeat_cap
            if not fresh.all():
                has &= fresh
                counted = items[fresh]
            else:
                counted = items
        else:
            counted = items
        if len(counted) == 1:
            self._counts[counted[0]] += 1.0
        elif len(counted):
            np.add.at(self._counts, counted, 1.0)
        if has.all():
            self._buffer.append((users, windows, items, weights))
            self._n_buffered += len(users)
        elif has.any():
            self._buffer.append((users[has], windows[has], items[has], weights[has]))
            self._n_buffered += int(has.sum())
        self._win[users, :-1] = windows[:, 1:]
        self._win[users, -1] = items
        self._vec_version[users] = -1
        while self._n_buffered >= self.batch_size:
            self._train(self._take(self.batch_size))

    def _buffered(self) -> tuple[np.ndarray, ...]:
        """The waiting examples as columns (users, windows, targets, weights)."""
        if not self._n_buffered:
            return tuple(
                np.zeros((0, self.max_len) if name == "windows" else 0, dtype=dtype) for name, dtype in _BUFFER
            )
        if len(self._buffer) > 1:
            self._buffer = [tuple(np.concatenate(c) for c in zip(*self._buffer, strict=True))]
        return self._buffer[0]

    def _take(self, n: int) -> tuple[np.ndarray, ...]:
        """Remove and return the ``n`` oldest waiting examples."""
        columns = self._buffered()
        self._keep_buffered(np.arange(n, self._n_buffered))
        return tuple(c[:n] for c in columns)

    def _keep_buffered(self, keep: np.ndarray) -> None:
        columns = tuple(c[keep] for c in self._buffered())
        self._n_buffered = len(columns[0])
        self._buffer = [columns] if self._n_buffered else []

    def _candidates(self, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item rows scored by a step (sorted, distinct) and the logQ term of each (``None``: full softmax)."""
        n = self.n_items
        live = self.item_index.live_mask() if self.item_index.n_free else None
        if self.item_index.n_live <= self.n_negatives:
            rows = np.arange(n) if live is None else np.flatnonzero(live)
            return torch.from_numpy(rows).to(self._device), None
        counts = self._counts[:n] if live is None else np.where(live, self._counts[:n], 0.0)
        # only items with events can be drawn: the distribution over them alone, the same draws as over
        # every row (zero weights add nothing to the cumulative sum) at a cost that ignores the catalogue
        drawable = np.flatnonzero(counts)
        weight = np.power(counts[drawable], self.sample_alpha)
        cdf = np.cumsum(weight)
        uniform = torch.rand(self.n_negatives, generator=self._gen, dtype=torch.float64).numpy()
        sampled = drawable[np.minimum(np.searchsorted(cdf, uniform * cdf[-1], side="right"), len(drawable) - 1)]
        rows = np.unique(np.concatenate([targets, sampled]))
        # expected number of times each candidate is drawn: as a target (by popularity) or as a sample
        row_weight = np.power(counts[rows], self.sample_alpha) * (counts[rows] > 0)
        expected = len(targets) * counts[rows] / counts.sum() + self.n_negatives * row_weight / cdf[-1]
        logq = torch.from_numpy((self.logq * np.log(expected)).astype(np.float32))
        return torch.from_numpy(rows).to(self._device), logq.to(self._device)

    def _train(self, examples: tuple[np.ndarray, ...]) -> None:
        _, windows, targets, weights = examples
        dev, d, length, b = self._device, self.n_factors, self.max_len, len(targets)
        win = torch.from_numpy(windows).to(dev)
        empty = win < 0
        y = torch.from_numpy(targets).to(dev)
        w = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(dev)
        for _ in range(self.n_steps):
            cand, logq = self._candidates(targets)
            rows, inverse = torch.unique(torch.cat([win.clamp(min=0).reshape(-1), cand]), return_inverse=True)
            e = self._e[rows].requires_grad_(True)  # the rows a step touches, as a leaf
            flat = self._w.detach().requires_grad_(True)
            p = _views(flat, self._layout)
            x = _Gather.apply(e, inverse[: b * length])[:, :d].reshape(b, length, d)
            z = p["pos_bias"].expand(b, length)
            if self.content_attention:
                keys = x @ p["wk"] + p["pos"]
                z = z + torch.einsum("bld,bd->bl", keys, x[:, -1] @ p["wq"].T) / math.sqrt(d)
            a = z.masked_fill(empty, float("-inf")).softmax(-1)
            s = torch.einsum("bl,bld->bd", a, x)
            if self.value_projection:
                s = s @ p["wv"].T
            out = _Gather.apply(e, inverse[b * length :])
            logits = torch.addmm(out[:, d], s, out[:, :d].T)
            if logq is not None:
                logits = logits - logq
            loss = (functional.cross_entropy(logits, torch.searchsorted(cand, y), reduction="none") * w).sum() / b
            loss.backward()
            with torch.no_grad():
                self._adagrad(self._e, self._e_acc, rows, e.grad, self.lr)
                touched = rows.cpu().numpy()
                self._ann.mark(touched)
                self._note_item_rows(touched)
                if self._mirror is not None:  # remember the rows to copy, or copy all when cheaper
                    self._dirty.append(rows)
                    if sum(len(r) for r in self._dirty) > self.n_items:
                        self._mirror, self._dirty = None, []
                self._adagrad(self._w, self._w_acc, None, flat.grad, self.attention_lr)
        self._version += 1

    @staticmethod
    def _adagrad(
        table: torch.Tensor, acc: torch.Tensor, rows: torch.Tensor | None, grad: torch.Tensor, lr: float
    ) -> None:
        """One Adagrad step on ``table[rows]`` (the whole tensor when ``rows`` is ``None``)."""
        if rows is None:
            acc.add_(grad * grad)
            table.sub_(lr * grad / (acc.sqrt() + _EPS))
            return
        a = acc[rows] + grad * grad
        acc[rows] = a
        table[rows] = table[rows] - lr * grad / (a.sqrt() + _EPS)

    # -- forgetting ------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Erase the users' windows, cached vectors and waiting examples (item tables are aggregates and stay)."""
        self._win[rows] = -1
        self._vec[rows] = 0.0
        self._vec_version[rows] = -1
        if self._n_buffered:
            self._keep_buffered(np.flatnonzero(~np.isin(self._buffered()[0], rows)))

    @torch.no_grad()
    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Reset the items' rows and counts, take them out of every window, drop the examples that hold them."""
        r = torch.from_numpy(rows).to(self._device)
        self._e[r] = 0.0  # until the row holds an item again: then that item's initial row
        self._ann.drop(rows)
        self._uninitialised.update(rows.tolist())
        self._e_acc[r] = 0.0
        self._counts[rows] = 0.0
        win = self._win[: self.n_users]
        hit = np.isin(win, rows)
        users = np.flatnonzero(hit.any(axis=1))
        if len(users):
            block = np.where(hit[users], -1, win[users])
            order = np.argsort(block >= 0, axis=1, kind="stable")  # the remaining items to the end, in order
            self._win[users] = np.take_along_axis(block, order, axis=1)
            self._vec_version[users] = -1
        if self._n_buffered:
            _, windows, targets, _ = self._buffered()
            self._keep_buffered(np.flatnonzero(~(np.isin(targets, rows) | np.isin(windows, rows).any(axis=1))))
        if self._mirror is not None:
            mirrored = rows[rows < len(self._mirror["e"])]
            fresh = self._e[torch.from_numpy(mirrored).to(self._device)].double().cpu().numpy()
            self._mirror["e"][mirrored], self._mirror["b"][mirrored] = fresh[:, : self.n_factors], fresh[:, -1]

    # -- scoring ---------------------------------------------------------------------

    def _score(self, u: np.ndarray) -> np.ndarray:
        vectors = np.zeros((len(u), self.n_factors), dtype=np.float32)
        known = u >= 0
        if known.any():
            vectors[known] = self._user_vectors(u[known])
        m = self._mirrors()
        return dot_scores(vectors, m["e"], m["b"])

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Candidates from the item index, scored exactly (``None`` below ``ann_min_items`` items)."""
        if self.n_items < self.ann_min_items:
            return None
        vectors = np.zeros((len(u), self.n_factors), dtype=np.float32)
        known = u >= 0
        if known.any():
            vectors[known] = self._user_vectors(u[known])
        queries = np.hstack([vectors, np.ones((len(u), 1), dtype=np.float32)])
        fetch = 2 * max(want) + 50  # room for the re-ranking to change the order
        live = None if not self.item_index.n_free else self._live_item_rows
        found = self._ann.search(queries, fetch, self._item_vectors, self.n_items, live)
        if found is None:
            return None
        m = self._mirrors()
        return [(rows, dot_scores(vectors[r : r + 1], m["e"][rows], m["b"][rows])[0]) for r, rows in enumerate(found)]

    def _item_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The index's vectors of item ``rows``: embedding and bias (scored by a user vector and a 1)."""
        m = self._mirrors()
        return np.hstack([m["e"][rows], m["b"][rows, None]]).astype(np.float32)

    @torch.no_grad()
    def topk_device(
        self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item indices and scores per user, ranked on the model's device.

        The users' vectors come from the per-event path (cached NumPy); the
        product with the item table (float64, rounded to float32 as in
        :meth:`recommend`) and ``torch.topk`` run on the device, which pays
        off for many users and large catalogues on a GPU. Row ``n`` holds
        item indices (map them with ``item_index.ids_of``) and scores for
        ``users[n]``, with index ``-1`` and score ``-inf`` past the eligible
        items. Ties are broken as ``torch.topk`` breaks them.

        Examples
        --------
        >>> model = SASRec(n_factors=4, device="cpu")
        >>> model.learn(Interactions.from_columns(["ann", "ann", "bob"], ["tea", "jam", "ham"]))
        >>> idx, scores = model.topk_device(["ann", "nobody"], k=3)
        >>> idx.shape, int(idx[0, 1]), int(idx[0, 2])   # ann has seen two of the three items
        (torch.Size([2, 3]), -1, -1)
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        u = self.user_index.lookup([str(x) for x in users])
        k = min(k, self.n_items)
        if k == 0 or len(u) == 0:
            empty = torch.empty((len(u), 0), device=self._device)
            return empty.long(), empty
        vectors = np.zeros((len(u), self.n_factors), dtype=np.float32)
        known = u >= 0
        if known.any():
            vectors[known] = self._user_vectors(u[known])
        d, table = self.n_factors, self._e[: self.n_items].double()
        v = torch.from_numpy(vectors).to(self._device).double()
        scores = torch.addmm(table[:, d], v, table[:, :d].T).float()
        if self.item_index.n_free:  # free rows hold no item
            scores[:, torch.from_numpy(self.item_index.free_rows()).to(self._device)] = float("-inf")
        if exclude_seen:
            rows = [r for r, x in enumerate(u.tolist()) if x >= 0 for _ in self._seen[x]]
            cols = [j for x in u.tolist() if x >= 0 for j in self._seen[x]]
            if rows:
                scores[torch.tensor(rows, device=self._device), torch.tensor(cols, device=self._device)] = float("-inf")
        values, idx = torch.topk(scores, k, dim=1)
        idx[torch.isneginf(values)] = -1
        return idx, values

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        nu, ni = self.n_users, self.n_items

        def copy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().to("cpu", copy=True).numpy()

        state = {
            "item_table": copy(self._e[:ni]),
            "item_table_adagrad": copy(self._e_acc[:ni]),
            "attention": copy(self._w),
            "attention_adagrad": copy(self._w_acc),
            "item_counts": self._counts[:ni].copy(),
            "user_windows": self._win[:nu].copy(),
            "generator_state": copy(self._gen.get_state()),
        }
        for (name, _), column in zip(_BUFFER, self._buffered(), strict=True):
            state[f"buffer_{name}"] = column.copy()
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[name], dtype=np.float32)).to(self._device)

        self._e, self._e_acc = tensor("item_table"), tensor("item_table_adagrad")
        self._n_item_rows = self._e.shape[0]
        self._w, self._w_acc = tensor("attention"), tensor("attention_adagrad")
        self._counts = np.array(arrays["item_counts"], dtype=np.float64)
        self._win = np.array(arrays["user_windows"], dtype=np.int64).reshape(-1, self.max_len)
        self._vec = np.zeros((len(self._win), self.n_factors), dtype=np.float32)
        self._vec_version = np.full(len(self._win), -1, dtype=np.int64)
        columns = tuple(np.array(arrays[f"buffer_{name}"], dtype=dtype) for name, dtype in _BUFFER)
        self._n_buffered = len(columns[0])
        self._buffer = [(columns[0], columns[1].reshape(-1, self.max_len), *columns[2:])] if self._n_buffered else []
        self._gen.set_state(torch.from_numpy(np.array(arrays["generator_state"], dtype=np.uint8)))
        self._mirror, self._mirror_version, self._dirty = None, -1, []
        self._uninitialised = set(self.item_index.free_rows().tolist())
        self._ann.reset()

    # -- sharing across workers ------------------------------------------------------
    # the base class moves windows with their users and shares the item table, the attention
    # weights, their Adagrad sums and the counts as increments (asynchronous SGD)

    def _initial_item_rows(self, name: str, ids: list[str]) -> np.ndarray:
        if name == "_e":
            return self._new_rows(list(ids))
        return super()._initial_item_rows(name, ids)

    def drop_users(self, users: Iterable[Any]) -> int:
        """Hand ``users`` off to another worker (see :meth:`OnlineRecommender.drop_users`).

        Their windows go; their waiting examples stay, without their user row,
        and train here with the rest.
        """
        users = [str(u) for u in users]
        rows = self.user_index.lookup(users)
        rows = np.unique(rows[rows >= 0])
        if len(rows) and self._n_buffered:
            owners = self._buffered()[0]
            hit = np.isin(owners, rows)
            owners[hit] = -2 - owners[hit]  # no user row any more: forgetting a later user keeps them
        return super().drop_users(users)

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        self._vec_version[rows] = -1

    def _after_item_change(self, rows: np.ndarray) -> None:
        self._ann.mark(rows)
        self._version += 1  # cached user vectors and the NumPy mirrors follow the new weights
        if self._mirror is not None and len(rows):
            self._dirty.append(torch.from_numpy(rows).to(self._device))
            if sum(len(r) for r in self._dirty) > self.n_items:
                self._mirror, self._dirty = None, []

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        small = {"n_factors": 8, "max_len": 5, "batch_size": 16, "n_negatives": 8, "device": "cpu", "seed": 5}
        return [small, {**small, "ann_min_items": 1}]  # the second: lists from the item index
