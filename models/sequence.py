"""GRU4Rec: a recurrent next-item model in torch, trained online on growing tables (CPU or CUDA).

:class:`GRU4Rec` follows Hidasi et al. (*Session-based recommendations with
recurrent neural networks*, 2016; *Recurrent neural networks with top-k gains*,
2018) and their official PyTorch code: one GRU layer whose hidden state
summarises a user's item sequence, the item embeddings shared between the
GRU's input and the output layer ("constrained embedding"), an item bias, and
a cross-entropy loss over the targets of the micro-batch plus items sampled in
proportion to ``popularity ** sample_alpha``, with the logQ correction of the
sampling. Training is GRU4Rec's own, which is already online: session-parallel
mini-batches with the hidden states carried over between them and
backpropagation through one step.

Why a GRU and not self-attention (SASRec): the recurrent state makes the
per-event path constant-time. Learning an event advances the user's state by
one GRU step and recommending is one product of that state with the item
table, whatever the length of the history; an attention model re-reads the
last ``L`` items on every change of a user's sequence, about ten times the
work per event on a CPU thread at this size.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional

from models.base import Interactions, OnlineRecommender
from models.scoring import dot_scores
from models.torch_mf import _ensure_rows

__all__ = ["GRU4Rec"]

_EPS = 1e-6


def _gru_layout(d: int) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """Where each GRU weight lies in the flat weight vector: ``name -> (start, stop, shape)``.

    The layout is torch's ``GRUCell``: ``weight_ih`` and ``weight_hh`` stack the
    gates r, z, n as ``(3d, d)`` matrices, ``bias_ih`` and ``bias_hh`` as ``(3d,)``.
    """
    shapes = {"w_ih": (3 * d, d), "w_hh": (3 * d, d), "b_ih": (3 * d,), "b_hh": (3 * d,)}
    layout, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        layout[name] = (start, start + size, shape)
        start += size
    return layout


def _views(flat: Any, layout: dict[str, tuple[int, int, tuple[int, ...]]]) -> dict[str, Any]:
    """The GRU weights as views of a flat tensor or array."""
    return {name: flat[a:b].reshape(shape) for name, (a, b, shape) in layout.items()}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def _rank_in_user(u: np.ndarray) -> np.ndarray:
    """For events of users ``u`` in arrival order: how many earlier events of the same user the batch holds."""
    order = np.argsort(u, kind="stable")
    su = u[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    sizes = np.diff(np.r_[starts, len(u)])
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u)) - np.repeat(starts, sizes)
    return rank


class GRU4Rec(OnlineRecommender):
    """Next-item recommendation from a GRU over each user's item sequence, learned online.

    Each user has a state ``(h, p)``: ``p`` is their newest item and ``h`` the
    GRU's hidden state before it (zeros for a new user). The user's vector is
    ``s = GRU(e_p, h)`` (``h`` itself while they have no item) and item ``j``
    scores ``<s, e_j> + b_j``, with one embedding table ``e`` for the GRU's
    input and the output. Users never seen score ``b`` alone (learned
    popularity); so does a forgotten user.

    **Per event.** Learning an event ``(u, i)`` moves ``u`` to ``(s, i)`` at
    once, so the very next list of ``u`` reflects it; the training example
    ``(h, p) -> i`` goes to a buffer. ``s`` is computed with the current
    weights when first needed and cached per user until their state or the
    weights change, so one event costs about one GRU step (NumPy, float64 on
    the CPU) and one product with the item table. Scores are float64 products
    rounded to float32 (:func:`models.scoring.dot_scores`), so a user's list
    does not depend on the other users in a call.

    **Training (the lag).** Every ``batch_size`` buffered examples, the model
    takes ``n_steps`` Adagrad steps on them, each with ``n_negatives`` fresh
    negatives (GRU4Rec's training: the hidden states come from the buffer,
    computed with the weights of their time, and the gradient goes through
    the last GRU step only). So an event changes its user's list at once but
    the weights only after at most ``batch_size - 1`` further examples; a
    user's first event has no previous item and gives no example. The
    candidates of a step are the batch's targets and items drawn with
    probability ``count ** sample_alpha``; each candidate's logit is lowered
    by ``logq * log(expected draws)`` (the sampled-softmax correction). When
    the catalogue has at most ``n_negatives`` items the loss is the full
    softmax instead, uncorrected.

    **Devices and determinism.** The tables and the training step live on
    ``device`` (CUDA when available); the per-event path reads float64 NumPy
    copies of the weights, refreshed after each step. Initial rows and
    negatives come from a seeded CPU generator, so on the CPU the same seed
    gives the same model; on CUDA gradients are summed by index with
    deterministic kernels, and runs agree with the CPU up to float rounding.
    Tables grow with capacity doubling; the Adagrad sums grow with them.

    Parameters
    ----------
    n_factors
        Size of the item embeddings and of the GRU's hidden state.
    lr
        Adagrad learning rate.
    batch_size
        Training examples per step (the largest lag of the weights).
    n_negatives
        Items sampled per step besides the batch's targets.
    sample_alpha
        Exponent of item counts in the sampling distribution (0: uniform
        over items seen, 1: by popularity).
    logq
        Weight of the logQ correction (0: none).
    n_steps
        Gradient steps per buffered batch (negatives are redrawn each step).
    dropout
        Dropout on the GRU output during training.
    init_std
        Standard deviation of new embedding rows.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
    seed
        Seed of the initial weights, negatives and dropout.

    Examples
    --------
    Users walk a cycle ``i0 -> i1 -> ... -> i5 -> i0``; after a user's ``i2``
    the model puts ``i3`` first:

    >>> model = GRU4Rec(n_factors=16, lr=0.2, batch_size=16, n_negatives=8, device="cpu", seed=0)
    >>> for epoch in range(12):
    ...     users = [f"u{epoch}-{s}" for s in range(6) for _ in range(6)]
    ...     items = [f"i{(s + t) % 6}" for s in range(6) for t in range(6)]
    ...     model.learn(Interactions.from_columns(users, items))
    >>> model.learn(Interactions.from_columns(["ann", "ann"], ["i1", "i2"]))
    >>> model.recommend(["ann"], k=1).items
    [['i3']]
    """

    name: ClassVar[str] = "gru4rec"

    def __init__(
        self,
        n_factors: int = 64,
        lr: float = 0.05,
        batch_size: int = 64,
        n_negatives: int = 512,
        sample_alpha: float = 0.5,
        logq: float = 1.0,
        n_steps: int = 1,
        dropout: float = 0.0,
        init_std: float = 0.1,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_factors = n_factors
        self.lr = lr
        self.batch_size = batch_size
        self.n_negatives = n_negatives
        self.sample_alpha = sample_alpha
        self.logq = logq
        self.n_steps = n_steps
        self.dropout = dropout
        self.init_std = init_std
        self.device = device
        super().__init__(seed=seed)

    # -- state -----------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        """The device holding the tables and running the training steps."""
        return self._device

    def _init_state(self) -> None:
        super()._init_state()
        self._device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(self.seed)
        d, dev = self.n_factors, self._device
        self._layout = _gru_layout(d)
        size = max(b for _, b, _ in self._layout.values())
        bound = 1.0 / math.sqrt(d)  # torch's GRUCell initialisation
        # the GRU's weights in one flat vector (one Adagrad update per step) and their Adagrad sums
        self._gru = ((torch.rand(size, generator=self._gen) * 2.0 - 1.0) * bound).to(dev)
        self._gru_acc = torch.zeros_like(self._gru)
        # item table: columns :d are the embedding (GRU input and output), column d the item bias
        self._e = torch.zeros((0, d + 1), dtype=torch.float32, device=dev)
        self._e_acc = torch.zeros_like(self._e)
        self._n_item_rows = 0
        self._counts = np.zeros(0, dtype=np.float64)  # events per item row (sampling distribution)
        # per user: hidden state before the newest item, the newest item (-1: none), cached user vector
        self._h = np.zeros((0, d), dtype=np.float32)
        self._last = np.zeros(0, dtype=np.int64)
        self._vec = np.zeros((0, d), dtype=np.float32)
        self._vec_version = np.zeros(0, dtype=np.int64)
        # training examples waiting for a step: user row, hidden state, previous item, target, weight
        self._buffer: list[tuple[np.ndarray, ...]] = []
        self._n_buffered = 0
        self._version = 0  # weight updates so far (cached user vectors and mirrors are per version)
        self._mirror: dict[str, np.ndarray] | None = None
        self._mirror_version = -1

    def _new_rows(self, n: int) -> torch.Tensor:
        rows = torch.randn((n, self.n_factors), generator=self._gen, dtype=torch.float32) * self.init_std
        return torch.cat([rows, torch.zeros((n, 1))], dim=1).to(self._device)  # bias 0

    def _grow(self, n_users: int, n_items: int) -> None:
        if n_users > len(self._last):
            self._h = self._grown(self._h, n_users)
            self._vec = self._grown(self._vec, n_users)
            self._last = self._grown(self._last, n_users, fill=-1)
            self._vec_version = self._grown(self._vec_version, n_users, fill=-1)
        if n_items > self._n_item_rows:
            self._e = _ensure_rows(self._e, n_items)
            self._e_acc = _ensure_rows(self._e_acc, n_items)
            self._e[self._n_item_rows : n_items] = self._new_rows(n_items - self._n_item_rows)
            self._n_item_rows = n_items
            self._counts = self._grown(self._counts, n_items)

    # -- the per-event path: NumPy copies of the weights -----------------------------

    def _mirrors(self) -> dict[str, np.ndarray]:
        """Float64 CPU copies of the weights (refreshed after a step; new item rows appended)."""
        n, d = self.n_items, self.n_factors
        mirror = self._mirror
        if mirror is None or self._mirror_version != self._version:
            mirror = _views(self._gru.double().cpu().numpy(), self._layout)
            table = self._e[:n].double().cpu().numpy()
            mirror["e"], mirror["b"] = np.ascontiguousarray(table[:, :d]), table[:, d].copy()
            self._mirror, self._mirror_version = mirror, self._version
        elif len(mirror["e"]) < n:
            new = self._e[len(mirror["e"]) : n].double().cpu().numpy()
            mirror["e"] = np.concatenate([mirror["e"], new[:, :d]])
            mirror["b"] = np.concatenate([mirror["b"], new[:, d]])
        return mirror

    def _gru_step(self, items: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """``GRU(e_items, hidden)`` row by row in float64, rounded to float32 (rows of no item keep ``hidden``)."""
        m, d = self._mirrors(), self.n_factors
        if len(items) == 1:  # the per-event path: 1-D operations
            if items[0] < 0:
                return hidden.astype(np.float32)
            h = hidden[0].astype(np.float64)
            gi = m["w_ih"] @ m["e"][items[0]] + m["b_ih"]
            gh = m["w_hh"] @ h + m["b_hh"]
            rz = _sigmoid(gi[: 2 * d] + gh[: 2 * d])
            n = np.tanh(gi[2 * d :] + rz[:d] * gh[2 * d :])
            return (n + rz[d:] * (h - n)).astype(np.float32)[None, :]
        out = hidden.astype(np.float32, copy=True)
        has = items >= 0
        if not has.any():
            return out
        h = hidden[has].astype(np.float64)
        gi = m["e"][items[has]] @ m["w_ih"].T + m["b_ih"]
        gh = h @ m["w_hh"].T + m["b_hh"]
        rz = _sigmoid(gi[:, : 2 * d] + gh[:, : 2 * d])
        n = np.tanh(gi[:, 2 * d :] + rz[:, :d] * gh[:, 2 * d :])
        out[has] = n + rz[:, d:] * (h - n)
        return out

    def _user_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors ``s`` of user rows ``rows`` (cached until their state or the weights change)."""
        if len(rows) == 1 and self._vec_version[rows[0]] == self._version:
            return self._vec[rows]
        fresh = self._vec_version[rows] == self._version
        if fresh.all():
            return self._vec[rows]
        out = np.empty((len(rows), self.n_factors), dtype=np.float32)
        out[fresh] = self._vec[rows[fresh]]
        stale = rows[~fresh]
        vectors = self._gru_step(self._last[stale], self._h[stale])
        out[~fresh] = vectors
        self._vec[stale] = vectors
        self._vec_version[stale] = self._version
        return out

    # -- learning --------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        w = batch.weights
        if len(u) == 1:
            self._advance(u, i, w)
            return
        rank = _rank_in_user(u)
        for r in range(int(rank.max()) + 1):  # each user at most once per round, rounds in arrival order
            sel = np.flatnonzero(rank == r)
            self._advance(u[sel], i[sel], w[sel])

    def _advance(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
        """Learn one event of each of the distinct ``users``: buffer the examples, move the states."""
        if len(items) == 1:
            self._counts[items[0]] += 1.0
        else:
            np.add.at(self._counts, items, 1.0)
        vectors = self._user_vectors(users)
        prev = self._last[users]
        has = prev >= 0
        if has.all():
            self._buffer.append((users, self._h[users], prev, items, weights))
            self._n_buffered += len(users)
        elif has.any():
            self._buffer.append((users[has], self._h[users[has]], prev[has], items[has], weights[has]))
            self._n_buffered += int(has.sum())
        self._h[users] = vectors
        self._last[users] = items
        self._vec_version[users] = -1
        while self._n_buffered >= self.batch_size:
            self._train(self._take(self.batch_size))

    def _take(self, n: int) -> tuple[np.ndarray, ...]:
        """Remove and return the ``n`` oldest buffered examples as columns."""
        columns = [np.concatenate(c) for c in zip(*self._buffer, strict=True)]
        taken = tuple(c[:n] for c in columns)
        rest = tuple(c[n:] for c in columns)
        self._buffer = [rest] if len(rest[0]) else []
        self._n_buffered = len(rest[0])
        return taken

    def _candidates(self, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item rows scored by a step (sorted, distinct) and the logQ term of each (``None``: full softmax)."""
        live = self.item_index.live_mask() if self.item_index.n_free else None
        counts = self._counts[: self.n_items] if live is None else np.where(live, self._counts[: self.n_items], 0.0)
        n_live = self.item_index.n_live
        if n_live <= self.n_negatives:
            rows = np.arange(self.n_items) if live is None else np.flatnonzero(live)
            return torch.from_numpy(rows).to(self._device), None
        weight = np.power(counts, self.sample_alpha) * (counts > 0)
        cdf = np.cumsum(weight)
        uniform = torch.rand(self.n_negatives, generator=self._gen, dtype=torch.float64).numpy()
        sampled = np.minimum(np.searchsorted(cdf, uniform * cdf[-1], side="right"), len(cdf) - 1)
        rows = np.unique(np.concatenate([targets, sampled]))
        # expected number of times each candidate is drawn: as a target (by popularity) or as a sample
        expected = len(targets) * counts[rows] / counts.sum() + self.n_negatives * weight[rows] / cdf[-1]
        logq = torch.from_numpy((self.logq * np.log(expected)).astype(np.float32))
        return torch.from_numpy(rows).to(self._device), logq.to(self._device)

    def _train(self, examples: tuple[np.ndarray, ...]) -> None:
        _, hidden, prev, target, weight = examples
        dev, d = self._device, self.n_factors
        h = torch.from_numpy(hidden).to(dev)
        p = torch.from_numpy(prev).to(dev)
        y = torch.from_numpy(target).to(dev)
        w = torch.from_numpy(np.asarray(weight, dtype=np.float32)).to(dev)
        for _ in range(self.n_steps):
            cand, logq = self._candidates(target)
            rows, inverse = torch.unique(torch.cat([p, cand]), return_inverse=True)
            e = self._e[rows].requires_grad_(True)  # the rows a step touches, as a leaf
            flat = self._gru.detach().requires_grad_(True)
            g = _views(flat, self._layout)
            x = e[inverse[: len(p)], :d]
            gi = torch.addmm(g["b_ih"], x, g["w_ih"].T)
            gh = torch.addmm(g["b_hh"], h, g["w_hh"].T)
            rz = torch.sigmoid(gi[:, : 2 * d] + gh[:, : 2 * d])
            n = torch.tanh(gi[:, 2 * d :] + rz[:, :d] * gh[:, 2 * d :])
            s = n + rz[:, d:] * (h - n)
            if self.dropout > 0.0:
                keep = torch.rand(s.shape, generator=self._gen).to(dev) >= self.dropout
                s = s * keep / (1.0 - self.dropout)
            out = e[inverse[len(p) :]]
            logits = torch.addmm(out[:, d], s, out[:, :d].T)
            if logq is not None:
                logits = logits - logq
            label = torch.searchsorted(cand, y)
            loss = (functional.cross_entropy(logits, label, reduction="none") * w).sum() / len(y)
            loss.backward()
            with torch.no_grad():
                self._adagrad(self._e, self._e_acc, rows, e.grad)
                self._adagrad(self._gru, self._gru_acc, None, flat.grad)
        self._version += 1

    def _adagrad(self, table: torch.Tensor, acc: torch.Tensor, rows: torch.Tensor | None, grad: torch.Tensor) -> None:
        """One Adagrad step on ``table[rows]`` (the whole tensor when ``rows`` is ``None``)."""
        if rows is None:
            acc.add_(grad * grad)
            table.sub_(self.lr * grad / (acc.sqrt() + _EPS))
            return
        a = acc[rows] + grad * grad
        acc[rows] = a
        table[rows] = table[rows] - self.lr * grad / (a.sqrt() + _EPS)

    # -- forgetting ------------------------------------------------------------------

    def _drop_buffered(self, keep: np.ndarray) -> None:
        if self._n_buffered:
            columns = tuple(np.concatenate(c)[keep] for c in zip(*self._buffer, strict=True))
            self._buffer = [columns] if len(columns[0]) else []
            self._n_buffered = len(columns[0])

    def _buffered(self) -> tuple[np.ndarray, ...]:
        if not self._n_buffered:
            d = self.n_factors
            return (
                np.zeros(0, np.int64),
                np.zeros((0, d), np.float32),
                *(np.zeros(0, np.int64),) * 2,
                np.zeros(0, np.float32),
            )
        return tuple(np.concatenate(c) for c in zip(*self._buffer, strict=True))

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Erase the users' states, cached vectors and waiting examples (item tables are aggregates and stay)."""
        self._h[rows] = 0.0
        self._vec[rows] = 0.0
        self._last[rows] = -1
        self._vec_version[rows] = -1
        if self._n_buffered:
            self._drop_buffered(~np.isin(self._buffered()[0], rows))

    @torch.no_grad()
    def _forget_item_rows(self, rows: np.ndarray) -> None:
        r = torch.from_numpy(rows).to(self._device)
        self._e[r] = self._new_rows(len(rows))
        self._e_acc[r] = 0.0
        self._counts[rows] = 0.0
        users = np.flatnonzero(np.isin(self._last[: self.n_users], rows))
        self._last[users] = -1  # their hidden state stays: it summarises the items before
        self._vec_version[users] = -1
        if self._n_buffered:
            _, _, prev, target, _ = self._buffered()
            self._drop_buffered(~(np.isin(prev, rows) | np.isin(target, rows)))
        if self._mirror is not None:
            seen = rows[rows < len(self._mirror["e"])]
            fresh = self._e[torch.from_numpy(seen).to(self._device)].double().cpu().numpy()
            self._mirror["e"][seen], self._mirror["b"][seen] = fresh[:, : self.n_factors], fresh[:, self.n_factors]

    # -- scoring ---------------------------------------------------------------------

    def _score(self, u: np.ndarray) -> np.ndarray:
        vectors = np.zeros((len(u), self.n_factors), dtype=np.float32)
        known = u >= 0
        if known.any():
            vectors[known] = self._user_vectors(u[known])
        m = self._mirrors()
        return dot_scores(vectors, m["e"], m["b"])

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        nu, ni = self.n_users, self.n_items

        def copy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().to("cpu", copy=True).numpy()

        state = {
            "item_table": copy(self._e[:ni]),
            "item_table_adagrad": copy(self._e_acc[:ni]),
            "gru_weights": copy(self._gru),
            "gru_weights_adagrad": copy(self._gru_acc),
            "item_counts": self._counts[:ni].copy(),
            "user_hidden": self._h[:nu].copy(),
            "user_last_item": self._last[:nu].copy(),
            "generator_state": copy(self._gen.get_state()),
        }
        for name, column in zip(("users", "hidden", "prev", "target", "weight"), self._buffered(), strict=True):
            state[f"buffer_{name}"] = column
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[name], dtype=np.float32)).to(self._device)

        self._e, self._e_acc = tensor("item_table"), tensor("item_table_adagrad")
        self._n_item_rows = self._e.shape[0]
        self._counts = np.array(arrays["item_counts"], dtype=np.float64)
        self._gru, self._gru_acc = tensor("gru_weights"), tensor("gru_weights_adagrad")
        nu = len(arrays["user_last_item"])
        self._h = np.array(arrays["user_hidden"], dtype=np.float32).reshape(nu, self.n_factors)
        self._last = np.array(arrays["user_last_item"], dtype=np.int64)
        self._vec = np.zeros_like(self._h)
        self._vec_version = np.full(nu, -1, dtype=np.int64)
        columns = tuple(
            np.array(arrays[f"buffer_{k}"], dtype=t)
            for k, t in (
                ("users", np.int64),
                ("hidden", np.float32),
                ("prev", np.int64),
                ("target", np.int64),
                ("weight", np.float32),
            )
        )
        self._buffer = [columns] if len(columns[0]) else []
        self._n_buffered = len(columns[0])
        self._gen.set_state(torch.from_numpy(np.array(arrays["generator_state"], dtype=np.uint8)))
        self._mirror, self._mirror_version = None, -1

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"n_factors": 8, "lr": 0.1, "batch_size": 16, "n_negatives": 8, "device": "cpu", "seed": 5}]
