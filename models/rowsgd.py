"""Sparse optimiser steps on the touched rows of NumPy embedding tables.

An online factor model updates a few rows per event: the user's, the item's,
those of sampled negatives. Gradients of the same row within a batch are summed
first (:func:`sum_rows`, in the order the events came, as ``torch``'s
``index_add_`` does), then one step is taken per distinct row:

- :func:`adagrad_step`: Adagrad per coordinate, ``acc += g**2; row -= lr * g / (sqrt(acc) + eps)``;
- :func:`adagrad_norm_step`: Adagrad per row ("AdaGrad-Norm"): one accumulator
  per row, ``acc += |g|**2 / dim``, the same step size for all coordinates of a
  row, so the step does not depend on how the latent space is rotated.

Both make a new row's first steps large (a new user or item moves at once,
which per-event learning needs) and shrink them as the row's gradients add up.

Examples
--------
>>> table, acc = np.zeros((3, 2), np.float32), np.zeros(3, np.float32)
>>> rows, grads = sum_rows(np.array([2, 0, 2]), np.ones((3, 2), np.float32))
>>> rows.tolist(), grads.tolist()
([0, 2], [[1.0, 1.0], [2.0, 2.0]])
>>> adagrad_norm_step(table, acc, rows, grads, lr=0.1)
>>> table.astype(float).round(3).tolist()   # each touched row moves by lr in every coordinate on its first step
[[-0.1, -0.1], [0.0, 0.0], [-0.1, -0.1]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPS", "adagrad_norm_step", "adagrad_step", "sum_rows"]

#: Added to the square root of the accumulators.
EPS = 1e-8


def sum_rows(idx: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``idx`` (sorted) and the rows of ``grad`` summed per distinct row.

    Duplicates are added in the order they come in ``idx`` (a stable sort),
    as ``torch.unique`` followed by ``index_add_`` adds them.
    """
    if len(idx) == 1:
        return idx, grad
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    return ordered[starts], np.add.reduceat(grad[order], starts, axis=0)


def adagrad_step(table: np.ndarray, acc: np.ndarray, rows: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """One Adagrad step per coordinate on distinct ``rows`` (``acc`` has the shape of ``table``)."""
    a = acc[rows] + grad * grad
    acc[rows] = a
    table[rows] = table[rows] - table.dtype.type(lr) * grad / (np.sqrt(a) + table.dtype.type(EPS))


def adagrad_norm_step(table: np.ndarray, acc: np.ndarray, rows: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """One Adagrad step per row on distinct ``rows`` (``acc`` holds one value per row)."""
    dtype = table.dtype.type
    sq = grad * grad if grad.ndim == 1 else np.einsum("ij,ij->i", grad, grad) / dtype(grad.shape[1])
    a = acc[rows] + sq
    acc[rows] = a
    scale = dtype(lr) / (np.sqrt(a) + dtype(EPS))
    table[rows] = table[rows] - (scale[:, None] * grad if grad.ndim > 1 else scale * grad)
