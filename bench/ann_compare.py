"""faiss-cpu IVF-Flat, usearch HNSW and hnswlib HNSW side by side on the item vectors of an embedding model.

Not one of ``python -m bench``'s benchmarks: usearch and hnswlib are not dependencies of
the project. Run it in an environment that has all three
(``pip install faiss-cpu usearch hnswlib``): ``python bench/ann_compare.py 1000000``
prints the figures as JSON after each library; ``bench/results/ann_compare.json`` holds
the ones that chose faiss (see ``models/retrieval.py``).

Vectors: 65 dimensions (an embedding and a bias), around 200 centres. Per library:
build time, a top-100 query one at a time (mean of 200), recall@10 against exact, and
the time to re-insert 576 changed vectors (what one SASRec training step changes).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _timed(f: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def main(n: int, d: int = 65, queries: int = 200, k: int = 100, changed: int = 576) -> dict[str, Any]:
    import faiss
    import hnswlib
    from usearch.index import Index

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, d)).astype(np.float32)
    x = (centres[rng.integers(0, 200, n)] * 0.3 + rng.standard_normal((n, d)).astype(np.float32) * 0.1).astype(
        np.float32
    )
    q = (centres[rng.integers(0, 200, queries)] * 0.3 + rng.standard_normal((queries, d)) * 0.1).astype(np.float32)
    exact = np.stack([np.argsort(-(x @ row))[:k] for row in q])

    def recall(found: list[np.ndarray]) -> float:
        pairs = zip(found, exact, strict=True)
        return float(np.mean([len(set(f[:10].tolist()) & set(e[:10].tolist())) / 10 for f, e in pairs]))

    out: dict[str, Any] = {}
    faiss.omp_set_num_threads(1)
    for nlist in (1024, 4096):
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        _, train = _timed(lambda index=index, nlist=nlist: index.train(x[rng.choice(n, min(n, 40 * nlist), False)]))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        _, add = _timed(lambda index=index: index.add_with_ids(x, np.arange(n, dtype=np.int64)))
        for nprobe in (8, 32):
            index.nprobe = nprobe
            found, t = _timed(lambda index=index: [index.search(q[j : j + 1], k)[1][0] for j in range(queries)])
            out[f"faiss ivf{nlist} nprobe{nprobe}"] = {
                "build_s": train + add,
                "query_ms": 1e3 * t / queries,
                "recall@10": recall(found),
            }
        rows = rng.choice(n, changed, replace=False).astype(np.int64)
        _, t = _timed(lambda index=index, rows=rows: (index.remove_ids(rows), index.add_with_ids(x[rows], rows)))
        out[f"faiss ivf{nlist} nprobe8"]["update_576_ms"] = 1e3 * t
        print(json.dumps(out), flush=True)
    graph = Index(ndim=d, metric="ip", dtype="f32", connectivity=16, expansion_add=64, expansion_search=128)
    _, add = _timed(lambda: graph.add(np.arange(n), x, threads=2))
    found, t = _timed(lambda: [graph.search(q[j], k).keys for j in range(queries)])
    rows = rng.choice(n, changed, replace=False)
    _, tu = _timed(lambda: (graph.remove(rows), graph.add(rows, x[rows], threads=1)))
    out["usearch hnsw M16"] = {"build_s": add, "query_ms": 1e3 * t / queries, "recall@10": recall(found)}
    out["usearch hnsw M16"]["update_576_ms"] = 1e3 * tu
    print(json.dumps(out), flush=True)
    hnsw = hnswlib.Index(space="ip", dim=d)
    hnsw.init_index(max_elements=n, M=16, ef_construction=64)
    hnsw.set_num_threads(2)
    _, add = _timed(lambda: hnsw.add_items(x, np.arange(n)))
    hnsw.set_ef(128)
    found, t = _timed(lambda: [hnsw.knn_query(q[j], k)[0][0] for j in range(queries)])
    rows = rng.choice(n, changed, replace=False)
    _, tu = _timed(lambda: hnsw.add_items(x[rows], rows))
    out["hnswlib hnsw M16"] = {"build_s": add, "query_ms": 1e3 * t / queries, "recall@10": recall(found)}
    out["hnswlib hnsw M16"]["update_576_ms"] = 1e3 * tu
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
