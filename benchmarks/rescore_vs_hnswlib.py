"""Binary index + float rescoring vs hnswlib on float vectors: recall@k, queries/s, RAM per vector.

Run (one process, one thread for every search; medians of --repeats runs)::

    python benchmarks/rescore_vs_hnswlib.py                      # synthetic 20k x 384, k=10
    python benchmarks/rescore_vs_hnswlib.py --dataset minilm     # the shipped MiniLM/WordNet set

recall is recall@k against exact float search (faiss IndexFlatIP), plain id overlap. The float
vectors used for rescoring are memory-mapped from a .npy file, so "B/vec RAM" counts the binary
index (codes, ids, graph) only; hnswlib holds its float vectors in RAM. Queries/s: all queries in
one call ("batch") and one query per call ("1-by-1"); builds and searches all single-threaded
(numpy's BLAS too); medians after a warm-up pass, so the touched pages of the .npy are in the
page cache (RAM the OS can reclaim, not counted in B/vec).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # numpy's BLAS (rescoring, float flat) on one thread too; set before import

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.embed.floats import FloatHNSW  # noqa: E402
from annbin.embed.rescore import RescoredIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int, nq: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered, normalized float32 vectors with low intrinsic dimension (rank 48 + noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    basis = rng.standard_normal((48, dim)).astype(np.float32) / np.sqrt(48)
    x = (0.5 * centres[rng.integers(0, 100, n + nq)] + rng.standard_normal((n + nq, 48)).astype(np.float32) @ basis
         + 0.1 * rng.standard_normal((n + nq, dim)).astype(np.float32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def minilm() -> tuple[np.ndarray, np.ndarray]:
    folder = ROOT / "annbin" / "data" / "minilm_wordnet"
    out = []
    for name in ("base.npy", "queries.npy"):
        x = np.load(folder / name).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out[0], out[1]


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds of this process, wall seconds) of ``repeats`` calls, after a warm-up.

    Every search here runs on the calling thread, so CPU time is what the search costs, and unlike
    wall time it does not grow when other processes share the cores.
    """
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(cpu), statistics.median(wall)


def recall(I: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / ref.shape[1] for a, b in zip(I, ref)]))


def measure(search, queries, ref, k, repeats, one_by_one_n):
    """recall@k, and queries/s: batch by CPU time, one-by-one by CPU time, batch by wall time."""
    _, I = search(queries, k)
    batch_cpu, batch_wall = timed(lambda: search(queries, k), repeats)
    sub = queries[:one_by_one_n]
    single_cpu, _ = timed(lambda: [search(sub[i : i + 1], k) for i in range(len(sub))], repeats)
    nq = len(queries)
    return recall(I, ref), (nq / batch_cpu, len(sub) / single_cpu, nq / batch_wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["synthetic", "minilm"], default="synthetic")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--oversample", type=int, nargs="+", default=[1, 2, 4, 10])
    ap.add_argument("--ef", type=int, nargs="+", default=[10, 16, 32, 64, 128])
    ap.add_argument("--M", type=int, default=16, help="graph degree of hnswlib (and of binary HNSW unless --binary-M)")
    ap.add_argument("--binary-M", type=int, default=None, help="graph degree of the binary HNSW")
    ap.add_argument("--ef-search", type=int, default=16, help="binary HNSW beam (widened to k*oversample)")
    ap.add_argument("--thresholds", choices=["zero", "median"], default="zero")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one-by-one", type=int, default=200, help="queries timed one per call")
    args = ap.parse_args(argv)

    base, queries = synthetic(args.n, args.nq, args.dim) if args.dataset == "synthetic" else minilm()
    n, dim, k = base.shape[0], base.shape[1], args.k
    exact = faiss.IndexFlatIP(dim)
    exact.add(base)
    _, ref = exact.search(queries, k)

    thresholds = annbin.fit_thresholds(base) if args.thresholds == "median" else None
    codes = annbin.binarize(base, thresholds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vectors.npy")
        np.save(path, base)
        faiss.omp_set_num_threads(1)  # one thread for every build and search, faiss and hnswlib alike
        t0 = time.perf_counter()
        flat = annbin.FlatIndex(codes.shape[1] * 8)
        flat.add(codes)
        flat_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        bm = args.binary_M or args.M
        hnsw = annbin.HNSWIndex(codes.shape[1] * 8, M=bm, ef_construction=200, ef_search=args.ef_search)
        hnsw.add(codes)
        hnsw_build = time.perf_counter() - t0
        for name, inner, build in (("flat+rescore", flat, flat_build), (f"hnsw(M={bm})+rescore", hnsw, hnsw_build)):
            rescored = RescoredIndex(inner, vectors=path, thresholds=thresholds)
            for o in args.oversample:
                rescored.set_search_params(oversample=o)
                r, qps = measure(rescored.search, queries, ref, k, args.repeats, args.one_by_one)
                rows.append((name, f"oversample={o}", r, qps, rescored.memory_bytes() / n, build))
        t0 = time.perf_counter()
        fh = FloatHNSW(dim, M=args.M, ef_construction=200, num_threads=1)
        fh.add(base)
        fh_build = time.perf_counter() - t0
        for ef in args.ef:
            fh.set_search_params(ef=ef)
            r, qps = measure(fh.search, queries, ref, k, args.repeats, args.one_by_one)
            rows.append((f"hnswlib(M={args.M})", f"ef={ef}", r, qps, fh.memory_bytes() / n, fh_build))
        flat_float = annbin.FloatFlat(dim)
        flat_float.add(base)
        r, qps = measure(flat_float.search, queries, ref, k, args.repeats, args.one_by_one)
        rows.append(("float flat (faiss)", "-", r, qps, flat_float.memory_bytes() / n, 0.0))

    print(f"dataset={args.dataset} n={n} dim={dim} nq={len(queries)} k={k} thresholds={args.thresholds} "
          f"threads=1 faiss={faiss.__version__} python={sys.version.split()[0]}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"| index | setting | recall@{k} (float) | QPS batch (cpu) | QPS 1-by-1 (cpu) | QPS batch (wall) | B/vec RAM | build s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, setting, r, (qps, qps1, qpsw), bpv, build in rows:
        print(f"| {name} | {setting} | {r:.3f} | {qps:,.0f} | {qps1:,.0f} | {qpsw:,.0f} | {bpv:,.0f} | {build:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
