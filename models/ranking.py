"""Vectorised top-k selection over a batch of score rows."""

from __future__ import annotations

import numpy as np

__all__ = ["top_k"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the indices and values of the ``k`` largest entries of each row, best first.

    Uses ``argpartition`` (linear time) and sorts only the ``k`` winners. Ties
    break towards the lower index, also at the k-th place (``argpartition``
    alone picks arbitrarily among values tied there), so the result is the
    top ``k`` by (value descending, index ascending). ``k`` larger than the
    number of columns returns every column.

    Examples
    --------
    >>> idx, val = top_k(np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2], [0, 2]], [[0.9, 0.5], [3.0, 2.0]])
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {scores.shape}")
    n_rows, n_cols = scores.shape
    k = min(int(k), n_cols)
    if k <= 0 or n_rows == 0:
        return np.empty((n_rows, 0), dtype=np.int64), np.empty((n_rows, 0), dtype=scores.dtype)
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        threshold = np.take_along_axis(scores, part, axis=1).min(axis=1)[:, None]
        above = (scores > threshold).sum(axis=1)
        tied = (scores == threshold).sum(axis=1)
        for r in np.flatnonzero(above + tied > k):  # a tie at the k-th place: take the lowest indices
            row, t = scores[r], threshold[r, 0]
            part[r] = np.concatenate([np.flatnonzero(row > t), np.flatnonzero(row == t)[: k - above[r]]])
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    vals = np.take_along_axis(scores, part, axis=1)
    # stable sort on (-value, index) so ties are deterministic
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(vals, order, axis=1)
