"""Score products whose rows do not depend on the other rows computed with them.

BLAS computes one row of ``P @ Q.T`` with a matrix-vector kernel and many rows
with a matrix-matrix kernel, which add in a different order: the same user
scored alone and in a batch gets scores that differ in the last bits, and
tied or nearly tied items can swap places. The live worker batches whoever a
micro-batch touched and the per-event backtest scores one user at a time, so a
user's list must not depend on that. :func:`dot_scores` multiplies in
``float64`` and rounds to ``float32``: the two kernels then agree after
rounding except, with a probability of about one in a billion per score, when
the exact value lies on a rounding boundary.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p, q = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal((300, 16)).astype(np.float32)
>>> together = dot_scores(p, q)
>>> all((dot_scores(p[r : r + 1], q) == together[r : r + 1]).all() for r in range(50))
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["dot_scores", "rows_or_mean"]


def dot_scores(users: np.ndarray, items: np.ndarray, item_bias: np.ndarray | None = None) -> np.ndarray:
    """``users @ items.T (+ item_bias)`` as ``float32``, each row independent of the others.

    Parameters
    ----------
    users
        ``(m, d)`` user vectors.
    items
        ``(n, d)`` item vectors.
    item_bias
        Optional ``(n,)`` term added to every row.
    """
    out = np.asarray(users, dtype=np.float64) @ np.asarray(items, dtype=np.float64).T
    if item_bias is not None:
        out += np.asarray(item_bias, dtype=np.float64)
    return out.astype(np.float32)


def rows_or_mean(table: np.ndarray, rows: np.ndarray, live: np.ndarray | None) -> np.ndarray:
    """``table[rows]``, with the mean of the ``live`` rows where a row is ``-1`` (an unknown user).

    ``live`` is a boolean mask over ``table``'s first rows (``None``: all of
    them are live; an empty selection gives zeros). Factor models score users
    they have never seen with the average user.

    Examples
    --------
    >>> import numpy as np
    >>> rows_or_mean(np.array([[1.0, 0.0], [3.0, 2.0]]), np.array([1, -1]), None).tolist()
    [[3.0, 2.0], [2.0, 1.0]]
    """
    if (rows >= 0).all():
        return table[rows]
    out = np.zeros((len(rows), table.shape[1]), dtype=table.dtype)
    known = rows >= 0
    out[known] = table[rows[known]]
    pool = table if live is None else table[: len(live)][live]
    if len(pool):
        out[~known] = pool.mean(axis=0)
    return out
