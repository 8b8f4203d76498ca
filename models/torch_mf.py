"""Matrix factorisation with the BPR loss in torch, on growing embedding tables (CPU or CUDA).

:class:`TorchBPR` keeps user and item embeddings and an item bias in plain
tensors that grow (capacity doubling) as new ids appear. Each learned
micro-batch takes ``n_steps`` optimisation steps of BPR with ``n_negatives``
sampled items per event (see :class:`models.negatives.NegativeSampler`). The
gradients are written out in closed form and applied with sparse Adagrad to
the touched rows only, so the tables can be reallocated at any time and the
optimiser state is just more tables that grow with them (a ``torch.optim``
optimiser would hold references to the old tensors).

On the CPU, small batches (the per-event path of the live worker at low load
and of the backtest) take the same step in NumPy on views of the same tensors:
a dozen small torch operations cost about 10 µs each in dispatch alone, the
NumPy equivalents about 1 µs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch

from models.base import Interactions, OnlineRecommender
from models.devices import resolve_device
from models.negatives import NegativeSampler
from models.rowsgd import EPS, adagrad_step, sum_rows
from models.scoring import dot_scores

__all__ = ["TorchBPR"]

#: Batches of at most this many events take the NumPy step on the CPU (torch's per-call overhead dominates there).
_NUMPY_EVENTS = 64


def _ensure_rows(table: torch.Tensor, n: int) -> torch.Tensor:
    """``table`` with room for at least ``n`` rows (capacity doubles; new rows are zero)."""
    rows = table.shape[0]
    if rows >= n:
        return table
    out = torch.zeros((max(n, 2 * rows, 16), *table.shape[1:]), dtype=table.dtype, device=table.device)
    out[:rows] = table
    return out


class TorchBPR(OnlineRecommender):
    """Bayesian personalised ranking with user/item embeddings and item biases, in torch.

    ``score(u, i) = <p_u, q_i> + b_i``. For each event ``(u, i)`` of a batch and
    each of ``n_negatives`` items ``j`` drawn uniformly from the catalogue, the
    loss is ``-weight * log(sigmoid(score(u, i) - score(u, j))) / n_negatives``
    plus ``l2 / 2`` times the squared norms of the rows involved. Gradients are
    summed per row over the batch and applied with Adagrad
    (``row -= lr * g / (sqrt(sum g^2) + eps)``) to the touched rows only.

    Determinism: new rows and negatives come from a seeded CPU
    ``torch.Generator``, so CPU and CUDA runs see the same random numbers.
    On CPU, the same seed gives the same model. On CUDA, gradients are summed
    per row with ``index_put_(accumulate=True)``, which is deterministic there,
    and runs agree with CPU runs up to float rounding.

    Speed (measured): per event on CPU (learn one event, recommend one user)
    the default 4 steps per batch ran at 1,400 (MovieLens 100K) and 1,810
    (YOOCHOOSE) events/s on a shared 2-core machine, below the 2,000 target;
    ``n_steps=2`` halves the learning work at 7-14% less HR@10 on the development parts
    (``docs/tuning/mf.md``).

    An unknown user is scored as the average user (mean of the user
    embeddings). :meth:`topk_device` ranks on the device with ``torch.topk``.

    Parameters
    ----------
    n_factors
        Embedding dimension.
    lr
        Adagrad learning rate.
    l2
        L2 penalty of the embeddings and biases touched by each event.
    n_negatives
        Negative items sampled per event and step.
    n_steps
        Optimisation steps per learned batch (negatives are redrawn each step).
    init_std
        Standard deviation of the normal initialisation of new embedding rows.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
    seed
        Seed of the generator of initial rows and negatives.

    Examples
    --------
    >>> model = TorchBPR(n_factors=8, lr=0.1, n_steps=5, device="cpu", seed=0)
    >>> likes = {"ann": ["alien", "solaris"], "bob": ["heat", "ronin"],
    ...          "cid": ["alien", "solaris", "dune"], "dan": ["heat", "ronin", "up"]}
    >>> users = [u for u, items in likes.items() for _ in items]
    >>> events = Interactions.from_columns(users, [i for items in likes.values() for i in items])
    >>> for _ in range(20):
    ...     model.learn(events)
    >>> model.recommend(["ann", "bob"], k=1).items
    [['dune'], ['up']]
    >>> idx, scores = model.topk_device(["ann"], k=1)
    >>> model.item_index.ids_of(idx[0].cpu())
    ['dune']
    """

    name: ClassVar[str] = "torch_bpr"

    def __init__(
        self,
        n_factors: int = 32,
        lr: float = 0.05,
        l2: float = 1e-4,
        n_negatives: int = 4,
        n_steps: int = 4,
        init_std: float = 0.1,
        neg_popularity: float = 0.0,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.n_negatives = n_negatives
        self.n_steps = n_steps
        self.init_std = init_std
        self.neg_popularity = neg_popularity
        self.device = device
        super().__init__(seed=seed)

    # -- state -----------------------------------------------------------------------

    @property
    def torch_device(self) -> torch.device:
        """The device holding the tables (``device``, or CUDA when available)."""
        return self._device

    def _init_state(self) -> None:
        super()._init_state()
        self._device = resolve_device(self.device)
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(self.seed)
        self._negatives = NegativeSampler(self.neg_popularity, seed=self.seed)
        k, dev = self.n_factors, self._device
        self._p = torch.zeros((0, k), dtype=torch.float32, device=dev)  # user embeddings
        self._q = torch.zeros((0, k), dtype=torch.float32, device=dev)  # item embeddings
        self._b = torch.zeros(0, dtype=torch.float32, device=dev)  # item biases
        self._p_acc = torch.zeros_like(self._p)  # Adagrad sums of squared gradients
        self._q_acc = torch.zeros_like(self._q)
        self._b_acc = torch.zeros_like(self._b)
        self._n_user_rows = 0  # rows initialised so far (capacity may be larger)
        self._n_item_rows = 0
        self._views: tuple[tuple[torch.Tensor, ...], tuple[np.ndarray, ...]] | None = None

    def _new_rows(self, n: int) -> torch.Tensor:
        rows = torch.randn((n, self.n_factors), generator=self._gen, dtype=torch.float32) * self.init_std
        return rows.to(self._device)

    def _grow(self, n_users: int, n_items: int) -> None:
        if n_users > self._n_user_rows:
            self._p = _ensure_rows(self._p, n_users)
            self._p_acc = _ensure_rows(self._p_acc, n_users)
            self._p[self._n_user_rows : n_users] = self._new_rows(n_users - self._n_user_rows)
            self._n_user_rows = n_users
        if n_items > self._n_item_rows:
            self._q = _ensure_rows(self._q, n_items)
            self._q_acc = _ensure_rows(self._q_acc, n_items)
            self._b = _ensure_rows(self._b, n_items)
            self._b_acc = _ensure_rows(self._b_acc, n_items)
            self._q[self._n_item_rows : n_items] = self._new_rows(n_items - self._n_item_rows)
            self._n_item_rows = n_items

    # -- learning --------------------------------------------------------------------

    def _adagrad(self, table: torch.Tensor, acc: torch.Tensor, idx: torch.Tensor, grad: torch.Tensor) -> None:
        """Sum ``grad`` per row of ``idx`` and take one Adagrad step on those rows."""
        rows, inverse = torch.unique(idx, return_inverse=True)
        g = torch.zeros((len(rows), *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
        if g.device.type == "cpu":
            g.index_add_(0, inverse, grad)  # sequential on CPU: deterministic
        else:
            g.index_put_((inverse,), grad, accumulate=True)  # sort-based on CUDA: deterministic
        a = acc[rows] + g * g
        acc[rows] = a
        table[rows] = table[rows] - self.lr * g / (a.sqrt() + EPS)

    def _draw_negatives(self, n: int) -> np.ndarray:
        """``(n, n_negatives)`` item rows; only rows holding an item (free rows would drift and be handed to a new item)."""
        live = np.flatnonzero(self.item_index.live_mask()) if self.item_index.n_free else None
        return self._negatives.draw((n, self.n_negatives), self.n_items, live)

    @torch.no_grad()
    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        w = batch.weights.astype(np.float32)
        if self._device.type == "cpu" and len(u) <= _NUMPY_EVENTS:
            self._learn_numpy(u, i, w)
        else:
            self._learn_torch(u, i, w)
        self._negatives.record(i)

    def _learn_torch(self, u: np.ndarray, i: np.ndarray, weights: np.ndarray) -> None:
        dev, m, l2 = self._device, self.n_negatives, self.l2
        u_t = torch.from_numpy(u).to(dev)
        i_t = torch.from_numpy(i).to(dev)
        w = torch.from_numpy(weights).to(dev)[:, None] / m
        for _ in range(self.n_steps):
            neg = torch.from_numpy(self._draw_negatives(len(u))).to(dev)
            pu, qi, qj = self._p[u_t], self._q[i_t], self._q[neg]
            bi, bj = self._b[i_t], self._b[neg]
            x = (pu * qi).sum(1, keepdim=True) + bi[:, None] - torch.einsum("nk,nmk->nm", pu, qj) - bj
            g = -torch.sigmoid(-x) * w  # d loss / d x, shape (n, m)
            g_sum = g.sum(1)
            grad_pu = g_sum[:, None] * qi - torch.einsum("nm,nmk->nk", g, qj) + l2 * pu
            grad_qi = g_sum[:, None] * pu + l2 * qi
            grad_qj = -g[:, :, None] * pu[:, None, :] + (l2 / m) * qj
            grad_bi = g_sum + l2 * bi
            grad_bj = -g + (l2 / m) * bj
            items = torch.cat([i_t, neg.reshape(-1)])
            self._adagrad(self._p, self._p_acc, u_t, grad_pu)
            self._adagrad(self._q, self._q_acc, items, torch.cat([grad_qi, grad_qj.reshape(-1, self.n_factors)]))
            self._adagrad(self._b, self._b_acc, items, torch.cat([grad_bi, grad_bj.reshape(-1)]))

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy``) drop the cached NumPy views: copied views would not share the copied tensors' memory."""
        state = self.__dict__.copy()
        state["_views"] = None
        return state

    def _cpu_arrays(self) -> tuple[np.ndarray, ...]:
        """NumPy views of the CPU tables ``(p, q, b, p_acc, q_acc, b_acc)``, cached until a table is reallocated."""
        tables = (self._p, self._q, self._b, self._p_acc, self._q_acc, self._b_acc)
        cached = self._views
        if cached is None or any(a is not b for a, b in zip(cached[0], tables, strict=True)):
            cached = self._views = (tables, tuple(t.numpy() for t in tables))
        return cached[1]

    def _learn_numpy(self, u: np.ndarray, i: np.ndarray, weights: np.ndarray) -> None:
        """The step of :meth:`_learn_torch` in NumPy, on views of the CPU tensors (same math, same draws)."""
        m, k = self.n_negatives, self.n_factors
        l2, l2_neg = np.float32(self.l2), np.float32(self.l2 / m)
        p, q, b, p_acc, q_acc, b_acc = self._cpu_arrays()
        w = weights[:, None] / np.float32(m)
        half = np.float32(0.5)
        for _ in range(self.n_steps):
            neg = self._draw_negatives(len(u))
            pu, qi, qj = p[u], q[i], q[neg]
            bi, bj = b[i], b[neg]
            x = (pu * qi).sum(1, keepdims=True) + bi[:, None] - np.matmul(qj, pu[:, :, None])[:, :, 0] - bj
            g = -(half - half * np.tanh(half * x)) * w  # -sigmoid(-x) * w, without overflow
            g_sum = g.sum(1)
            grad_pu = g_sum[:, None] * qi - np.matmul(g[:, None, :], qj)[:, 0, :] + l2 * pu
            grad_qi = g_sum[:, None] * pu + l2 * qi
            grad_qj = -g[:, :, None] * pu[:, None, :] + l2_neg * qj
            grad_bi = g_sum + l2 * bi
            grad_bj = -g + l2_neg * bj
            users, g_p = sum_rows(u, grad_pu)
            items = np.concatenate([i, neg.reshape(-1)])
            # item vectors and biases summed in one pass: columns 0..k-1 the vector, column k the bias
            g_qb = np.empty((len(items), k + 1), dtype=np.float32)
            g_qb[: len(i), :k], g_qb[len(i) :, :k] = grad_qi, grad_qj.reshape(-1, k)
            g_qb[: len(i), k], g_qb[len(i) :, k] = grad_bi, grad_bj.reshape(-1)
            rows, g_qb = sum_rows(items, g_qb)
            g_q, g_b = g_qb[:, :k], g_qb[:, k]
            adagrad_step(p, p_acc, users, g_p, self.lr)
            adagrad_step(q, q_acc, rows, g_q, self.lr)
            adagrad_step(b, b_acc, rows, g_b, self.lr)

    # -- forgetting ------------------------------------------------------------------

    @torch.no_grad()
    def _forget_rows(self, rows: np.ndarray) -> None:
        """Give the users fresh random embeddings and zero Adagrad sums (item tables are aggregates and stay)."""
        r = torch.from_numpy(rows).to(self._device)
        self._p[r] = self._new_rows(len(rows))
        self._p_acc[r] = 0.0

    @torch.no_grad()
    def _forget_item_rows(self, rows: np.ndarray) -> None:
        r = torch.from_numpy(rows).to(self._device)
        self._q[r] = self._new_rows(len(rows))
        self._b[r] = 0.0
        self._q_acc[r] = 0.0
        self._b_acc[r] = 0.0
        self._negatives.forget_items(rows)

    # -- scoring ---------------------------------------------------------------------

    def _user_vectors(self, u: np.ndarray) -> torch.Tensor:
        """Embedding of each user index; ``-1`` (unknown) gets the mean user embedding."""
        known = u >= 0
        if known.all():
            return self._p[torch.from_numpy(u).to(self._device)]
        vectors = torch.zeros((len(u), self.n_factors), dtype=torch.float32, device=self._device)
        if self.user_index.n_live:
            p = self._p[: self.n_users]
            if self.user_index.n_free:
                p = p[torch.from_numpy(self.user_index.live_mask()).to(self._device)]
            vectors[:] = p.mean(0)
        if known.any():
            rows = torch.from_numpy(np.flatnonzero(known)).to(self._device)
            vectors[rows] = self._p[torch.from_numpy(u[known]).to(self._device)]
        return vectors

    @torch.no_grad()
    def _score_tensor(self, u: np.ndarray) -> torch.Tensor:
        n = self.n_items
        # in float64, rounded: a user's scores do not depend on the batch (see models.scoring)
        b, q = self._b[:n].double(), self._q[:n].double()
        return torch.addmm(b, self._user_vectors(u).double(), q.T).float()

    def _score(self, u: np.ndarray) -> np.ndarray:
        if self._device.type != "cpu":
            return self._score_tensor(u).cpu().numpy()
        n = self.n_items  # NumPy on views of the CPU tensors: no per-call torch dispatch
        p, q, b = self._cpu_arrays()[:3]
        users = p[u] if (u >= 0).all() else self._user_vectors(u).numpy()
        return dot_scores(users, q[:n], b[:n])

    @torch.no_grad()
    def topk_device(
        self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item indices and scores per user, ranked on the model's device.

        One matrix product and one ``torch.topk``; nothing leaves the device.
        Unlike :meth:`recommend`, it returns tensors: row ``n`` holds item
        indices (map them with ``item_index.ids_of``) and scores for
        ``users[n]``, with index ``-1`` and score ``-inf`` past the eligible
        items. Ties are broken as ``torch.topk`` breaks them.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        u = self.user_index.lookup([str(x) for x in users])
        k = min(k, self.n_items)
        if k == 0 or len(u) == 0:
            empty = torch.empty((len(u), 0), device=self._device)
            return empty.long(), empty
        scores = self._score_tensor(u)
        if self.item_index.n_free:  # free rows hold no item
            scores[:, torch.from_numpy(self.item_index.free_rows()).to(self._device)] = float("-inf")
        if exclude_seen:
            rows: list[int] = []
            cols: list[int] = []
            for r, x in enumerate(u.tolist()):
                if x >= 0:
                    seen = self._seen[x]
                    rows.extend([r] * len(seen))
                    cols.extend(seen)
            if rows:
                r_t = torch.tensor(rows, device=self._device)
                c_t = torch.tensor(cols, device=self._device)
                scores[r_t, c_t] = float("-inf")
        values, idx = torch.topk(scores, k, dim=1)
        idx[torch.isneginf(values)] = -1
        return idx, values

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        nu, ni = self.n_users, self.n_items

        def copy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().to("cpu", copy=True).numpy()

        return {
            "user_factors": copy(self._p[:nu]),
            "item_factors": copy(self._q[:ni]),
            "item_bias": copy(self._b[:ni]),
            "user_factors_adagrad": copy(self._p_acc[:nu]),
            "item_factors_adagrad": copy(self._q_acc[:ni]),
            "item_bias_adagrad": copy(self._b_acc[:ni]),
            "generator_state": copy(self._gen.get_state()),
            "negatives_recent": self._negatives.state()[0]["recent"],
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        def table(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[name], dtype=np.float32)).to(self._device)

        self._p, self._q, self._b = table("user_factors"), table("item_factors"), table("item_bias")
        self._p_acc, self._q_acc = table("user_factors_adagrad"), table("item_factors_adagrad")
        self._b_acc = table("item_bias_adagrad")
        self._n_user_rows, self._n_item_rows = self._p.shape[0], self._q.shape[0]
        self._gen.set_state(torch.from_numpy(np.array(arrays["generator_state"], dtype=np.uint8)))
        self._recent_negatives = arrays.get("negatives_recent", np.zeros(0, dtype=np.int64))

    def _extra_meta(self) -> dict[str, Any]:
        return {"negatives": self._negatives.state()[1]}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._negatives.set_state({"recent": self._recent_negatives}, extra.get("negatives", {}))

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"n_factors": 8, "lr": 0.1, "n_negatives": 4, "n_steps": 2, "device": "cpu", "seed": 5}]

    # -- factors ---------------------------------------------------------------------

    @torch.no_grad()
    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factors ``(P, Q)`` whose inner products are the model's scores.

        ``float32`` NumPy arrays on the CPU, ``n_users`` and ``n_items`` rows
        (free rows included), ``n_factors + 1`` columns with the item bias
        folded in: ``P[u] = [p_u, 1]`` and ``Q[i] = [q_i, b_i]``, so ``P[u] @
        Q[i]`` is the score :meth:`recommend` ranks by (for an ANN index, see
        :class:`models.ann.ANNRecommender`). New arrays (a copy).

        Examples
        --------
        >>> model = TorchBPR(n_factors=3, device="cpu")
        >>> model.learn(Interactions.from_columns(["ann", "bob"], ["tea", "jam"]))
        >>> p, q = model.factors()
        >>> p.shape, q.shape, bool(np.allclose(p @ q.T, model._score(np.arange(2)), atol=1e-6))
        ((2, 4), (2, 4), True)
        """
        nu, ni = self.n_users, self.n_items
        p = torch.cat([self._p[:nu], torch.ones((nu, 1), dtype=torch.float32, device=self._device)], dim=1)
        q = torch.cat([self._q[:ni], self._b[:ni, None]], dim=1)
        return p.to("cpu").numpy(), q.to("cpu").numpy()
