"""Symmetric item co-occurrence counts, updated pair by pair and read row by row.

Item-to-item models add one to ``C[h, j]`` and ``C[j, h]`` for every pair of
items a user interacts with close together, and score a user by a weighted sum
of the rows of their recent items. Both operations happen per event in the
live worker (micro-batches of one to a few events at low load) and in the
per-event backtest, so both must cost microseconds, not a pass over the whole
matrix.

Two stores behind one interface:

- :class:`DenseCooccurrence`: a ``float32`` square array (capacity doubling as
  items appear). Updates are a few indexed additions; a row sum is one
  ``dot`` over the gathered rows. Right for catalogues up to a few thousand
  items (4,096 items take 64 MiB).
- :class:`SparseCooccurrence`: a canonical CSR matrix plus, per row, a list of
  pending increments that is merged into the CSR matrix once it holds a
  quarter as many entries (amortised linear cost), and a side store (sorted
  cell keys and their counts) that takes other workers' counted cells
  (:meth:`add_cells`) and is folded into the matrix once it outgrows
  ``sqrt(2 nnz cells)``: a foreign increment of ``cells`` cells then costs
  about ``sqrt(nnz cells)``, not a pass over all ``nnz`` counts. Row sums
  gather the matrix's slices, the side store's and the pending lists. Right
  for large catalogues.

:func:`cooccurrence_store` picks one by catalogue size; a dense store turns
itself into a sparse one when the catalogue outgrows ``dense_max_items``
(see :meth:`DenseCooccurrence.to_sparse`).

A user's scores are computed by the same arithmetic whether the user is
scored alone or with others (one row sum per user), so a list never depends on
who else is in the batch.

Examples
--------
>>> import numpy as np
>>> store = cooccurrence_store(n_items=3)
>>> store.add_pairs(np.array([0, 0]), np.array([1, 2]))   # item 0 met items 1 and 2
>>> store.weighted_rows(np.array([0]), np.array([1.0], dtype=np.float32)).tolist()
[0.0, 1.0, 1.0]
>>> store.block(np.array([1, 2]), np.array([0])).tolist()
[[1.0], [1.0]]
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import scipy.sparse as sp

__all__ = ["DenseCooccurrence", "SparseCooccurrence", "cooccurrence_store"]

#: Catalogue size up to which :func:`cooccurrence_store` keeps a dense matrix.
DENSE_MAX_ITEMS = 4096


class _CellLog:
    """Directed cells ``(row, col)`` added since the log was last taken (off until first taken)."""

    def __init__(self) -> None:
        self.on = False
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []

    def add(self, rows: np.ndarray, cols: np.ndarray) -> None:
        if self.on:
            self._rows.append(np.asarray(rows, dtype=np.int64))
            self._cols.append(np.asarray(cols, dtype=np.int64))

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The logged cells with their counts, summed; the log starts afresh (and is on from now)."""
        self.on = True
        if not self._rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float32)
        rows, cols = np.concatenate(self._rows), np.concatenate(self._cols)
        self._rows, self._cols = [], []
        span = int(max(rows.max(), cols.max())) + 1
        cells, counts = np.unique(rows * span + cols, return_counts=True)
        return cells // span, cells % span, counts.astype(np.float32)


class DenseCooccurrence:
    """Co-occurrence counts in a dense ``float32`` array (see the module docstring)."""

    def __init__(self, n_items: int = 0) -> None:
        capacity = max(16, n_items)
        self._m = np.zeros((capacity, capacity), dtype=np.float32)
        self.n_items = n_items
        self.log = _CellLog()

    @property
    def nnz(self) -> int:
        """Stored non-zero counts."""
        n = self.n_items
        return int(np.count_nonzero(self._m[:n, :n]))

    def grow(self, n_items: int) -> None:
        """Make room for ``n_items`` items (new rows and columns are zero)."""
        capacity = self._m.shape[0]
        if n_items > capacity:
            new = max(n_items, 2 * capacity)
            grown = np.zeros((new, new), dtype=np.float32)
            grown[:capacity, :capacity] = self._m
            self._m = grown
        self.n_items = max(self.n_items, n_items)

    def add_pairs(self, h: np.ndarray, j: np.ndarray) -> None:
        """Add one to ``C[h[n], j[n]]`` and ``C[j[n], h[n]]`` for every ``n`` (pairs may repeat)."""
        if len(h) == 0:
            return
        capacity = self._m.shape[0]
        flat = self._m.reshape(-1)
        h64, j64 = np.asarray(h, dtype=np.int64), np.asarray(j, dtype=np.int64)
        keys = np.concatenate([h64 * capacity + j64, j64 * capacity + h64])
        cells, counts = np.unique(keys, return_counts=True)
        flat[cells] += counts.astype(np.float32)
        if self.log.on:
            self.log.add(np.concatenate([h64, j64]), np.concatenate([j64, h64]))

    def add_event(self, item: int, partners: np.ndarray) -> None:
        """Add one to ``C[item, p]`` and ``C[p, item]`` for distinct ``partners`` other than ``item``."""
        if len(partners):
            self._m[item, partners] += 1.0
            self._m[partners, item] += 1.0
            if self.log.on:
                p = np.asarray(partners, dtype=np.int64)
                self.log.add(np.concatenate([np.full(len(p), item), p]), np.concatenate([p, np.full(len(p), item)]))

    def add_cells(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts[n]`` to the single cell ``C[rows[n], cols[n]]`` (cells distinct; not logged)."""
        self._m[rows, cols] += counts

    def clear(self) -> None:
        """Zero every count."""
        self._m[:] = 0.0

    def weighted_rows(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum(weights[r] * C[rows[r], :])`` as a ``float32`` vector over the items."""
        return np.dot(weights.astype(np.float32, copy=False), self._m[rows, : self.n_items])

    def weighted_candidates(self, rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The non-zero entries of :meth:`weighted_rows`: their columns (ascending) and values."""
        summed = self.weighted_rows(rows, weights)
        cols = np.flatnonzero(summed)
        return cols, summed[cols]

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``r``: the columns with a count (ascending) and their counts."""
        values = self._m[r, : self.n_items]
        cols = np.flatnonzero(values)
        return cols, values[cols]

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``C[rows][:, cols]`` as a dense array."""
        return self._m[np.ix_(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))]

    def forget(self, rows: np.ndarray) -> None:
        """Zero the rows and columns of items ``rows``."""
        self._m[rows, :] = 0.0
        self._m[:, rows] = 0.0

    def csr(self) -> sp.csr_array:
        """The counts as a canonical CSR matrix (``n_items`` square)."""
        n = self.n_items
        return sp.csr_array(self._m[:n, :n])

    def to_sparse(self) -> SparseCooccurrence:
        """The same counts in a :class:`SparseCooccurrence` (the cell log moves along)."""
        sparse = SparseCooccurrence.from_csr(self.csr())
        sparse.log = self.log
        return sparse

    @classmethod
    def from_csr(cls, matrix: sp.csr_array) -> DenseCooccurrence:
        """A dense store holding ``matrix``."""
        store = cls(matrix.shape[0])
        n = matrix.shape[0]
        store._m[:n, :n] = matrix.toarray()
        return store


class SparseCooccurrence:
    """Co-occurrence counts in a CSR matrix plus per-row pending increments (see the module docstring)."""

    #: Cells the side store may hold whatever the size of the matrix.
    side_min_entries = 50_000

    def __init__(self, n_items: int = 0) -> None:
        self._csr = sp.csr_array((n_items, n_items), dtype=np.float32)
        self._side = _SortedCells()  # other workers' cells, not yet folded
        self._pending: defaultdict[int, list[int]] = defaultdict(list)
        self._n_pending = 0
        self.n_items = n_items
        self.log = _CellLog()

    @classmethod
    def from_csr(cls, matrix: sp.csr_array) -> SparseCooccurrence:
        """A sparse store holding ``matrix`` (made canonical)."""
        store = cls(matrix.shape[0])
        store._csr = sp.csr_array(matrix, dtype=np.float32)
        store._csr.sum_duplicates()
        return store

    def _settle(self) -> None:
        """Fold the pending increments and the side store into the CSR matrix."""
        self._merge()
        self._fold_side()

    def _fold_side(self) -> None:
        if len(self._side):
            self._csr = self._csr + self._side.csr(self._csr.shape[0])  # canonical + canonical: a linear merge
            self._side = _SortedCells()

    @property
    def nnz(self) -> int:
        """Stored non-zero counts (after merging the pending increments)."""
        self._settle()
        return int(self._csr.nnz)

    def grow(self, n_items: int) -> None:
        """Make room for ``n_items`` items (new rows and columns are zero)."""
        n = self._csr.shape[0]
        if n_items > n:  # new empty rows: extend indptr (scipy's resize copies the whole matrix)
            capacity = max(n_items, 2 * n)  # doubling: a stream of new items grows the matrix rarely
            csr = self._csr
            indptr = np.concatenate([csr.indptr, np.full(capacity - n, csr.indptr[-1], dtype=csr.indptr.dtype)])
            grown = sp.csr_array((csr.data, csr.indices, indptr), shape=(capacity, capacity), copy=False)
            grown.has_canonical_format = True
            self._csr = grown
        self.n_items = max(self.n_items, n_items)

    def add_pairs(self, h: np.ndarray, j: np.ndarray) -> None:
        """Add one to ``C[h[n], j[n]]`` and ``C[j[n], h[n]]`` for every ``n`` (pairs may repeat)."""
        if len(h) == 0:
            return
        if self.log.on:
            self.log.add(np.concatenate([h, j]), np.concatenate([j, h]))
        if len(h) > 20_000:  # a large batch: straight into the matrix
            self._merge(np.asarray(h, dtype=np.int64), np.asarray(j, dtype=np.int64))
            return
        pending = self._pending
        for a, b in zip(np.asarray(h).tolist(), np.asarray(j).tolist(), strict=True):
            pending[a].append(b)
            pending[b].append(a)
        self._n_pending += 2 * len(h)
        if self._n_pending > max(50_000, self._csr.nnz // 4):
            self._merge()

    def add_event(self, item: int, partners: np.ndarray) -> None:
        """Add one to ``C[item, p]`` and ``C[p, item]`` for distinct ``partners`` other than ``item``."""
        if not len(partners):
            return
        if self.log.on:
            p = np.asarray(partners, dtype=np.int64)
            self.log.add(np.concatenate([np.full(len(p), item), p]), np.concatenate([p, np.full(len(p), item)]))
        partners = np.asarray(partners).tolist()
        pending = self._pending
        pending[item].extend(partners)
        for p in partners:
            pending[p].append(item)
        self._n_pending += 2 * len(partners)
        if self._n_pending > max(50_000, self._csr.nnz // 4):
            self._merge()

    def _merge(self, h: np.ndarray | None = None, j: np.ndarray | None = None) -> None:
        """Fold the pending increments (and pairs ``h``, ``j``) into the CSR matrix."""
        parts_r: list[np.ndarray] = []
        parts_c: list[np.ndarray] = []
        if self._n_pending:
            rows = np.fromiter(self._pending.keys(), dtype=np.int64, count=len(self._pending))
            sizes = np.fromiter(map(len, self._pending.values()), dtype=np.int64, count=len(self._pending))
            parts_r.append(np.repeat(rows, sizes))
            parts_c.append(np.fromiter((c for cols in self._pending.values() for c in cols), np.int64, sizes.sum()))
            self._pending = defaultdict(list)
            self._n_pending = 0
        if h is not None and j is not None:
            parts_r += [h, j]
            parts_c += [j, h]
        if not parts_r:
            return
        n = self._csr.shape[0]  # the capacity (rows past n_items are empty)
        keys = np.concatenate(parts_r) * n + np.concatenate(parts_c)
        cells, counts = np.unique(keys, return_counts=True)
        index_dtype = np.int32 if self._csr.nnz + len(cells) < 2**31 and n < 2**31 else np.int64
        indptr = np.zeros(n + 1, dtype=index_dtype)
        np.cumsum(np.bincount(cells // n, minlength=n), out=indptr[1:])
        delta = sp.csr_array((counts.astype(np.float32), (cells % n).astype(index_dtype), indptr), shape=(n, n))
        delta.has_canonical_format = True
        self._csr = self._csr + delta  # canonical + canonical: a linear merge, canonical result

    def add_cells(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts[n]`` to the single cell ``C[rows[n], cols[n]]`` (cells distinct; not logged).

        The cells go to the side store (sorted cell keys, no pass over the
        rows), which is folded into the CSR matrix once it holds more than
        ``sqrt(2 nnz len(rows))`` cells: that bound balances merging each
        increment into the side store against folding it into the matrix, so
        an increment costs about ``sqrt(nnz len(rows))`` whatever the
        catalogue. (A fold per increment cost every worker a pass over all
        counts for each other worker's commit: 43 us per event of theirs at
        24 million counts.)
        """
        if not len(rows):
            return
        self._side.add(rows, cols, counts)
        if len(self._side) > max(self.side_min_entries, math.sqrt(2.0 * self._csr.nnz * len(rows))):
            self._fold_side()

    def clear(self) -> None:
        """Zero every count."""
        n = self._csr.shape[0]
        self._csr = sp.csr_array((n, n), dtype=np.float32)
        self._side = _SortedCells()
        self._pending = defaultdict(list)
        self._n_pending = 0

    def weighted_rows(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum(weights[r] * C[rows[r], :])`` as a ``float32`` vector over the items."""
        cols, vals = self._gathered(rows, weights)
        if not len(cols):
            return np.zeros(self.n_items, dtype=np.float32)
        return np.bincount(cols, vals, minlength=self.n_items).astype(np.float32)

    def weighted_candidates(
        self,
        rows: np.ndarray,
        weights: np.ndarray,
        replaced: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
        ordered: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The non-zero entries of :meth:`weighted_rows` (columns ascending), without a pass over the items.

        ``replaced`` maps rows to the ``(columns, counts)`` that stand in for
        them (a model's capped neighbour lists of long rows). With ``ordered``
        false the columns come in no particular order, unsorted: a ranking
        that breaks its own ties by column needs no sort of every candidate.

        The values are those of :meth:`weighted_rows` bit for bit: each
        column's terms are added in the same order. When the rows hold more
        entries than a tenth of the catalogue (the rows of popular items in a
        long stream), the entries are summed into a vector over the items
        instead of being sorted: at 100,000 items and 100,000 entries that is
        1 ms against 9.5 ms (the same sums, in the same order).
        """
        cols, vals = self._gathered(rows, weights, replaced)
        if not len(cols):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if len(cols) > self.n_items // 10:
            summed = np.bincount(cols, vals, minlength=self.n_items).astype(np.float32)
            nonzero_cols = np.flatnonzero(summed)
            return nonzero_cols, summed[nonzero_cols]
        unique, sums = _grouped_sums(cols, vals, self.n_items)
        if ordered:
            order = np.argsort(unique)
            unique, sums = unique[order], sums[order]
        nonzero = sums != 0
        return unique[nonzero].astype(np.int64), sums[nonzero]

    def _gathered(
        self, rows: np.ndarray, weights: np.ndarray, replaced: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every stored entry of ``C[rows]`` (matrix, side store and pending) with its weighted value, in row order."""
        csr, side, pending = self._csr, self._side, self._pending
        indptr, indices, data = csr.indptr, csr.indices, csr.data
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = side.bounds(rows)
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for k, (r, w) in enumerate(zip(rows.tolist(), np.asarray(weights, dtype=np.float64).tolist(), strict=True)):
            if replaced and r in replaced:
                stand_in_cols, stand_in_counts = replaced[r]
                cols.append(stand_in_cols)
                vals.append(stand_in_counts * w)
                continue
            a, b = indptr[r], indptr[r + 1]
            if b > a:
                cols.append(indices[a:b])
                vals.append(data[a:b] * w)
            if ends[k] > starts[k]:
                side_cols, side_counts = side.entries(starts[k], ends[k])
                cols.append(side_cols)
                vals.append(side_counts * w)
            extra = pending.get(r)
            if extra:
                cols.append(np.asarray(extra, dtype=np.int64))
                vals.append(np.full(len(extra), w))
        if not cols:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return np.concatenate(cols), np.concatenate(vals)

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``r``: the columns with a count (ascending) and their counts (the CSR slice when none is pending)."""
        starts, ends = self._side.bounds(np.array([r], dtype=np.int64))
        if self._pending.get(r) or ends[0] > starts[0]:
            return self.weighted_candidates(np.array([r], dtype=np.int64), np.ones(1, dtype=np.float32))
        csr = self._csr
        a, b = csr.indptr[r], csr.indptr[r + 1]
        return csr.indices[a:b].astype(np.int64), csr.data[a:b]

    def block(
        self, rows: np.ndarray, cols: np.ndarray, replaced: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    ) -> np.ndarray:
        """``C[rows][:, cols]`` as a dense array (``replaced``: stand-ins as in :meth:`weighted_candidates`).

        Every stored entry of the rows is looked up among the few columns
        asked for at once, not each row searched for the columns: a list's
        reasons read 20 rows that after a long stream hold thousands of
        entries each.
        """
        csr, side, pending = self._csr, self._side, self._pending
        rows = np.asarray(rows, dtype=np.int64)
        wanted, slot = np.unique(np.asarray(cols, dtype=np.int64), return_inverse=True)  # the columns asked for
        if not len(rows) or not len(wanted):
            return np.zeros((len(rows), len(slot)), dtype=np.float32)
        starts, ends = side.bounds(rows)
        parts_cols: list[np.ndarray] = []
        parts_counts: list[np.ndarray] = []
        sizes: list[int] = []  # entries of each row
        for n, r in enumerate(rows.tolist()):
            stand_in = replaced.get(r) if replaced else None
            if stand_in is not None:
                found = [stand_in]
            else:
                found = [(csr.indices[csr.indptr[r] : csr.indptr[r + 1]], csr.data[csr.indptr[r] : csr.indptr[r + 1]])]
                if ends[n] > starts[n]:
                    found.append(side.entries(starts[n], ends[n]))
                extra = pending.get(r)
                if extra:  # each pending increment counts 1
                    found.append((np.asarray(extra, dtype=np.int64), np.ones(len(extra), dtype=np.float32)))
            for entry_cols, entry_counts in found:
                parts_cols.append(entry_cols)
                parts_counts.append(entry_counts)
            sizes.append(sum(len(c) for c, _ in found))
        entry_cols = np.concatenate(parts_cols).astype(np.int64, copy=False)
        owner = np.repeat(np.arange(len(rows)), sizes)
        at = np.minimum(np.searchsorted(wanted, entry_cols), len(wanted) - 1)
        hit = wanted[at] == entry_cols
        counts = np.concatenate(parts_counts)[hit].astype(np.float64)
        out = np.bincount(owner[hit] * len(wanted) + at[hit], counts, minlength=len(rows) * len(wanted))
        return out.reshape(len(rows), len(wanted)).astype(np.float32)[:, slot]

    def forget(self, rows: np.ndarray) -> None:
        """Zero the rows and columns of items ``rows``."""
        self._settle()
        n = self._csr.shape[0]
        dead = np.zeros(n, dtype=bool)
        dead[rows] = True
        csr = self._csr
        if csr.nnz:
            entry_rows = np.repeat(np.arange(n), np.diff(csr.indptr))
            keep = ~(dead[entry_rows] | dead[csr.indices])
            if not keep.all():
                indptr = np.concatenate([[0], np.cumsum(np.bincount(entry_rows[keep], minlength=n))])
                kept = sp.csr_array((csr.data[keep], csr.indices[keep], indptr.astype(csr.indptr.dtype)), shape=(n, n))
                kept.has_canonical_format = True  # a subset of a canonical matrix, in order
                self._csr = kept

    def csr(self) -> sp.csr_array:
        """The counts as a canonical CSR matrix (``n_items`` square)."""
        self._settle()
        n, csr = self.n_items, self._csr
        end = int(csr.indptr[n])
        out = sp.csr_array((csr.data[:end].copy(), csr.indices[:end].copy(), csr.indptr[: n + 1].copy()), shape=(n, n))
        out.has_canonical_format = True
        return out

    def to_sparse(self) -> SparseCooccurrence:
        """This store."""
        return self


def _grouped_sums(cols: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``cols`` (in ``[0, n)``, in no particular order) and the ``float32`` sums of their ``vals``.

    Each column's values are added in input order (as ``np.unique`` and
    ``bincount`` add them), without sorting: every column marks one of its
    positions in a scratch array over ``[0, n)``, which only positions written
    in the same call are read from.

    >>> unique, sums = _grouped_sums(np.array([5, 2, 5, 9]), np.array([1.0, 2.0, 3.0, 4.0]), 10)
    >>> sorted(zip(unique.tolist(), sums.tolist()))
    [(2, 2.0), (5, 4.0), (9, 4.0)]
    """
    m = len(cols)
    marks = np.empty(n, dtype=np.int32 if m < 2**31 else np.int64)
    marks[cols] = np.arange(m, dtype=marks.dtype)  # one position per column (whichever write lands)
    first = marks[cols]
    kept = first == np.arange(m)
    group = (np.cumsum(kept) - 1)[first]
    return cols[kept], np.bincount(group, vals, minlength=int(kept.sum())).astype(np.float32)


class _SortedCells:
    """Counts of distinct cells ``(row, col)``, kept as sorted keys ``row << 31 | col`` and their counts.

    Adding ``d`` cells costs a merge of sorted arrays (``O(len + d)`` copies),
    and the cells of a row are one binary search away: no pass over the rows
    as a CSR matrix of the catalogue's size needs.
    """

    _SHIFT = 31
    _MASK = (1 << 31) - 1

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts[n]`` to cell ``(rows[n], cols[n])`` (cells distinct)."""
        keys = (np.asarray(rows, dtype=np.int64) << self._SHIFT) | np.asarray(cols, dtype=np.int64)
        order = np.argsort(keys)
        keys, counts = keys[order], np.asarray(counts, dtype=np.float32)[order]
        pos = np.searchsorted(self.keys, keys)
        old = pos < len(self.keys)
        old[old] = self.keys[pos[old]] == keys[old]
        np.add.at(self.counts, pos[old], counts[old])
        new = ~old
        self.keys = np.insert(self.keys, pos[new], keys[new])
        self.counts = np.insert(self.counts, pos[new], counts[new])

    def bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the cells of each of ``rows`` start and end (one search for all rows)."""
        if not len(self.keys):
            zeros = np.zeros(len(rows), dtype=np.int64)
            return zeros, zeros
        first = rows.astype(np.int64) << self._SHIFT
        edges = np.searchsorted(self.keys, np.concatenate([first, first + (1 << self._SHIFT)]))
        return edges[: len(rows)], edges[len(rows) :]

    def entries(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The columns (ascending) and counts of the cells from ``start`` to ``end`` (one row's, from :meth:`bounds`)."""
        return self.keys[start:end] & self._MASK, self.counts[start:end]

    def csr(self, n: int) -> sp.csr_array:
        """The cells as a canonical ``n`` x ``n`` CSR matrix."""
        rows = self.keys >> self._SHIFT
        index_dtype = np.int32 if n < 2**31 and len(self.keys) < 2**31 else np.int64
        indptr = np.zeros(n + 1, dtype=index_dtype)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        matrix = sp.csr_array((self.counts.copy(), (self.keys & self._MASK).astype(index_dtype), indptr), shape=(n, n))
        matrix.has_canonical_format = True
        return matrix


def cooccurrence_store(
    n_items: int = 0, matrix: sp.csr_array | None = None, dense_max_items: int = DENSE_MAX_ITEMS
) -> DenseCooccurrence | SparseCooccurrence:
    """A dense store for catalogues up to ``dense_max_items``, else a sparse one (holding ``matrix`` if given)."""
    if matrix is not None:
        n_items = matrix.shape[0]
    if n_items <= dense_max_items:
        return DenseCooccurrence(n_items) if matrix is None else DenseCooccurrence.from_csr(matrix)
    return SparseCooccurrence(n_items) if matrix is None else SparseCooccurrence.from_csr(matrix)
