"""Latency, throughput and recall of sharpgen.retrieval.index on random embeddings (exact, HNSW, IVF, PQ fast-scan).

For each size N, seeded random ``(N, dim)`` embeddings are indexed (L2-normalized, cosine) and queried with
other seeded vectors of the same law: ``--data gaussian`` (isotropic standard normal, the worst case) and/or
``--data lowrank`` (``z A + 0.1 e`` with ``z`` standard normal of ``--intrinsic-dim`` 16 dimensions, ``A`` a
fixed random ``16 x dim`` matrix and ``e`` isotropic noise: closer to learned embeddings, whose intrinsic
dimension is far below 100). One JSON line per (data, kind, search parameter), e.g.
``{"kind": "hnsw", "n": 1000000, "dim": 100, "threads": 2, "build_s": 310.2, "hnsw_m": 32,
"ef_search": 256, "p50_ms": 1.9, "p99_ms": 4.0, "batch_qps": 2100.0, "recall_at_10": 0.96,
"filtered_p50_ms": 3.1, "filtered_recall_at_10": 0.97}``.

- ``p50_ms``/``p99_ms``: ``sharpgen.retrieval.index.search`` of one query at a time, k = 10 (``--single`` queries,
  ``--single-threads`` OpenMP threads: one serving thread per query, and no OpenMP spin-waiting on cores
  another process uses, which on a shared 2-core machine made 2-thread single queries 10x slower);
- ``batch_qps``: queries per second of one ``search`` call on ``--queries`` queries;
- ``recall_at_10``: mean fraction of the exact top 10 (``IndexFlatL2``) found, over the batch;
- ``filtered_*``: the same with ``Filters(splits=("val",))``, a random 10 % of the rows (exact over the
  selection up to ``--exact-below`` rows, else the index with an ID selector).

Isotropic 100-d data is the hard case for approximate search (no structure, near-equal distances: at 1e6
HNSW needs efSearch > 1500 for recall@10 0.9); low intrinsic dimension is the easy one. Timings are wall
clock on a possibly shared machine; run it alone for clean numbers.

Example: ``python benchmarks/bench_index.py --sizes 100000 1000000 --data gaussian lowrank --threads 2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="index sizes N")
    parser.add_argument("--dim", type=int, default=100, help="embedding dimension (default 100)")
    parser.add_argument(
        "--data", nargs="+", choices=["gaussian", "lowrank"], default=["gaussian", "lowrank"], help="embedding laws"
    )
    parser.add_argument("--intrinsic-dim", type=int, default=16, help="latent dimension of lowrank data (16)")
    parser.add_argument("--kinds", nargs="+", default=["exact", "hnsw", "ivf", "pqfs"], help="index kinds to measure")
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads to build and batch (default 2)")
    parser.add_argument(
        "--single-threads", type=int, default=1, help="FAISS OpenMP threads for one-at-a-time queries (default 1)"
    )
    parser.add_argument("--queries", type=int, default=1000, help="batch size for throughput and recall")
    parser.add_argument("--single", type=int, default=300, help="one-at-a-time queries for p50/p99 latency")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (default 32)")
    parser.add_argument("--ef-construction", type=int, default=100, help="HNSW efConstruction (default 100)")
    parser.add_argument(
        "--ef-search", type=int, nargs="+", default=[64, 128, 256, 512, 1024], help="HNSW efSearch values"
    )
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells (default 0 = 4 sqrt(N))")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[64, 256], help="IVF nprobe values")
    parser.add_argument(
        "--k-factor",
        type=int,
        nargs="+",
        default=[16, 32, 64],
        help="pqfs refine_k_factor values (candidates per match)",
    )
    parser.add_argument(
        "--exact-below", type=int, default=150000, help="filtered searches over at most this many rows are exact"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the embeddings and queries")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1000 or args.dim < 2 or args.threads < 1 or args.k < 1:
        parser.error("--sizes must be >= 1000, --dim >= 2, --threads and --k >= 1")
    return args


def recall(found, truth, k: int) -> float:
    return float(sum(len(set(a[:k]) & set(b[:k])) for a, b in zip(found, truth, strict=True)) / (k * len(truth)))


def latencies_ms(index, queries, k: int, threads: int, filters=None):
    import faiss
    import numpy as np

    from sharpgen.retrieval.index import search

    times, saved = [], faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    for query in queries:
        start = time.perf_counter()
        search(index, query, k=k, filters=filters)
        times.append(time.perf_counter() - start)
    faiss.omp_set_num_threads(saved)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def measure(index, queries, k: int, args, truth, truth_filtered, filters) -> dict:
    from sharpgen.retrieval.index import search

    p50, p99 = latencies_ms(index, queries[: args.single], k, args.single_threads)
    start = time.perf_counter()
    found = search(index, queries, k=k).rows
    seconds = time.perf_counter() - start
    filtered_p50, _ = latencies_ms(index, queries[: args.single], k, args.single_threads, filters)
    found_filtered = search(index, queries, k=k, filters=filters).rows
    return {
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "batch_qps": round(len(queries) / seconds, 1),
        "recall_at_10": round(recall(found, truth, k), 4),
        "filtered_p50_ms": round(filtered_p50, 3),
        "filtered_recall_at_10": round(recall(found_filtered, truth_filtered, k), 4),
    }


def embeddings(law: str, n: int, args, rng):
    """``(n, dim)`` float32 draws of ``law``; ``rng`` fixed per (seed, N), the lowrank matrix per seed."""
    import numpy as np

    if law == "gaussian":
        return rng.standard_normal((n, args.dim), dtype=np.float32)
    mixing = np.random.default_rng([args.seed, 1]).standard_normal((args.intrinsic_dim, args.dim), dtype=np.float32)
    latent = rng.standard_normal((n, args.intrinsic_dim), dtype=np.float32)
    return latent @ mixing + 0.1 * rng.standard_normal((n, args.dim), dtype=np.float32)


def main(argv=None) -> None:
    args = parse_args(argv)
    import faiss
    import numpy as np
    import pandas as pd

    from sharpgen.config import build_settings
    from sharpgen.retrieval.index import Filters, IndexSettings, build_index, search

    faiss.omp_set_num_threads(args.threads)
    filters = Filters(splits=("val",))
    for n, law in [(n, law) for n in args.sizes for law in args.data]:
        rng = np.random.default_rng([args.seed, n])
        data = embeddings(law, n, args, rng)
        queries = embeddings(law, args.queries, args, rng)
        table = pd.DataFrame({"split": rng.choice(np.array(["train", "val", "test"]), n, p=[0.8, 0.1, 0.1])})
        base = {"data": law, "n": n, "dim": args.dim, "threads": args.threads, "single_threads": args.single_threads}
        start = time.perf_counter()
        exact = build_index(data, table, build_settings(IndexSettings, kind="exact", exact_below=args.exact_below))
        exact_build = time.perf_counter() - start
        truth = search(exact, queries, k=args.k).rows
        truth_filtered = search(exact, queries, k=args.k, filters=filters).rows
        runs = []
        if "exact" in args.kinds:
            runs.append(("exact", exact, exact_build, [({}, None)]))
        for kind in [kind for kind in args.kinds if kind != "exact"]:
            if kind == "hnsw":
                settings = build_settings(
                    IndexSettings,
                    kind="hnsw",
                    hnsw_m=args.hnsw_m,
                    hnsw_ef_construction=args.ef_construction,
                    exact_below=args.exact_below,
                )
                variants = [({"hnsw_ef_search": ef}, {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                                                       "ef_search": ef}) for ef in args.ef_search]  # fmt: skip
            elif kind == "ivf":
                settings = build_settings(IndexSettings, kind="ivf", ivf_nlist=args.nlist, exact_below=args.exact_below)
                variants = [({"ivf_nprobe": p}, {"nprobe": p}) for p in args.nprobe]
            elif kind == "pqfs":
                settings = build_settings(IndexSettings, kind="pqfs", exact_below=args.exact_below)
                variants = [({"refine_k_factor": f}, {"refine_k_factor": f}) for f in args.k_factor]
            else:
                raise SystemExit(f"unknown kind {kind!r}")
            start = time.perf_counter()
            index = build_index(data, table, settings)
            build = time.perf_counter() - start
            if kind == "ivf":
                variants = [(change, {**extra, "nlist": index.index.nlist}) for change, extra in variants]
            runs.append((kind, index, build, variants))
        for kind, index, build, variants in runs:
            for change, extra in variants:
                index.settings = dataclasses.replace(index.settings, **change)
                row = {"kind": kind, **base, "build_s": round(build, 2), **(extra or {})}
                row.update(measure(index, queries, args.k, args, truth, truth_filtered, filters))
                print(json.dumps(row), flush=True)
            if kind != "exact":
                del index
        runs.clear()
        del exact, data


if __name__ == "__main__":
    main()
