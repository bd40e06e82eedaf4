"""The no-argument ``BinaryEmbeddingIndex`` against hnswlib and rabitqlib's own indexes (issue 20).

One process, one search thread, k=10, every method's ef sweep timed interleaved with the others
(median of ``--repeats`` batch timings), graphs at M=16 and the same ef_construction. For each
method: the fastest point at recall@10 >= ``--target``, its RAM (``memory_bytes()``), floats read
a query, build time; then the ratios against hnswlib and rabitqlib's 5-bit codes-only HNSW.

    python benchmarks/default_vs_peers.py --dataset minilm_wordnet
    python benchmarks/default_vs_peers.py --dataset m2v_mpnet_500k --queries 1000
    python benchmarks/default_vs_peers.py --dataset m2v_mpnet_500k --dims 256 --target 0.90

``--dims D`` keeps the first D dims (renormalized): a lower-dimensional set beside the full one.
``--fallback`` adds the faiss fallback (``FALLBACK_SPEC``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import annbin  # noqa: E402
from annbin.bench.datasets import get_dataset  # noqa: E402
from annbin.bench.groundtruth import float_knn  # noqa: E402
from annbin.embed.embedding_index import DEFAULT_SPEC, FALLBACK_ROTATION, FALLBACK_SPEC  # noqa: E402
from annbin.embed.floats import make_float_index  # noqa: E402

EFS = (10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="minilm_wordnet")
    ap.add_argument("--dims", type=int, default=0)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--fallback", action="store_true")
    ap.add_argument("--adds", type=int, default=1, help="annbin's indexes get the base in this many adds (1: one build, as hnswlib)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip", default="", help="comma-separated words: methods whose name holds one are not built (e.g. SymQG,1-bit)")
    args = ap.parse_args()
    k = args.k
    ds = get_dataset(args.dataset)
    xb = np.ascontiguousarray(ds.get_database(), dtype=np.float32)
    xq = np.ascontiguousarray(ds.get_queries()[: args.queries], dtype=np.float32)
    if args.dims:
        xb, xq = xb[:, : args.dims].copy(), xq[:, : args.dims].copy()
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        _, truth = float_knn(xb, xq, k, "ip")
    else:
        _, truth = ds.get_groundtruth(k)
        truth = truth[: xq.shape[0]]
    n, dim = xb.shape
    print(f"{ds.name}{f' first {args.dims} dims' if args.dims else ''}: n={n} dim={dim} nq={xq.shape[0]} k={k} target={args.target}")
    faiss.omp_set_num_threads(args.build_threads)

    methods: dict[str, tuple[object, str, int]] = {}  # name -> (searcher, ef param name, floats read a query)

    skip = [w for w in args.skip.split(",") if w]

    def build(name: str, make, param: str, reads: int) -> None:
        if any(w in name for w in skip):
            return
        t0 = time.perf_counter()
        obj = make()
        methods[name] = (obj, param, reads)
        builds[name] = time.perf_counter() - t0
        print(f"  built {name} in {builds[name]:.1f} s, {obj.memory_bytes() / n:.0f} B/vector")

    builds: dict[str, float] = {}

    def hnswlib_index():
        ix = make_float_index("float-hnsw:M=16,ef_construction=100", dim, "ip")
        ix.num_threads = args.build_threads
        ix.add(xb)
        ix.num_threads = 1
        return ix

    def peer(spec: str):
        ix = make_float_index(spec, dim, "ip")
        ix.num_threads = args.build_threads
        ix.add(xb)
        return ix

    def embedding(spec: str | None = None, oversample: int | None = None, fallback: bool = False):
        if fallback:  # what BinaryEmbeddingIndex() builds where rabitqlib is missing
            ix = annbin.BinaryEmbeddingIndex(FALLBACK_SPEC, rotation=FALLBACK_ROTATION)
        else:
            ix = annbin.BinaryEmbeddingIndex(spec, oversample=oversample, threads=args.build_threads)
        step = max(1, n // args.adds)
        for lo in tqdm(range(0, n, step), desc="add", leave=False):
            ix.add(xb[lo : lo + step])
        ix.build()  # the faiss fallback's graph; nothing for rq-hnsw
        return ix

    build("hnswlib M=16", hnswlib_index, "ef", 0)
    build("rabitqlib HNSW 5-bit, codes only", lambda: peer("rq-hnsw:M=16,ef_construction=100,nbits=5"), "ef_search", 0)
    build("rabitqlib SymQG R=32, codes only", lambda: peer("rq-symqg:max_degree=32,ef_construction=100"), "ef_search", 0)
    build("annbin default (rq-hnsw 2-bit, 2 x k)", embedding, "ef_search", 2 * k)
    build("annbin rq-hnsw 1-bit, 3 x k", lambda: embedding("rq-hnsw:M=16,nbits=1,ef_construction=100", 3), "ef_search", 3 * k)
    if args.fallback:
        build("annbin faiss fallback (rabitq-hnsw, 3 x k)", lambda: embedding(None, fallback=True), "ef_search", 3 * k)
    faiss.omp_set_num_threads(1)

    points: dict[tuple[str, int], list[float]] = {}
    recalls: dict[tuple[str, int], float] = {}
    todo = [(name, ef) for name in methods for ef in EFS]
    for _ in tqdm(range(args.repeats), desc="rounds"):
        for name, ef in todo:  # interleaved: every method sees the same machine state
            obj, param, _ = methods[name]
            t0 = time.perf_counter()
            _, I = obj.search(xq, k, params={param: ef})
            points.setdefault((name, ef), []).append(time.perf_counter() - t0)
            recalls[(name, ef)] = recall(I, truth, k)
    base = {}
    for name in methods:
        ok = [(xq.shape[0] / statistics.median(points[(name, ef)]), recalls[(name, ef)], ef) for ef in EFS if recalls[(name, ef)] >= args.target]
        base[name] = max(ok) if ok else None
    hn, rq5 = base["hnswlib M=16"], base.get("rabitqlib HNSW 5-bit, codes only")
    ram_h = methods["hnswlib M=16"][0].memory_bytes()
    print(f"\n| method | ef | recall@{k} | queries/s | vs hnswlib | vs rabitqlib 5-bit | RAM / vector | RAM vs hnswlib | floats read / query | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (obj, _, reads) in methods.items():
        ram = obj.memory_bytes()
        b = base[name]
        if b is None:
            best = max(EFS, key=lambda ef: recalls[(name, ef)])
            print(f"| {name} | - | max {recalls[(name, best)]:.3f} | - | - | - | {ram / n:,.0f} B | 1/{ram_h / ram:.1f} | {reads} | {builds[name]:.1f} |")
            continue
        qps, rec, ef = b
        vs_h = f"{qps / hn[0]:.2f}x" if hn else "-"
        vs_r = f"{qps / rq5[0]:.2f}x" if rq5 else "-"
        print(f"| {name} | {ef} | {rec:.3f} | {qps:,.0f} | {vs_h} | {vs_r} | {ram / n:,.0f} B | 1/{ram_h / ram:.1f} | {reads} | {builds[name]:.1f} |")
    own = DEFAULT_SPEC.split("ef_search=")[1].split(",")[0]
    if "annbin default (rq-hnsw 2-bit, 2 x k)" in methods and int(own) in EFS:
        name, ef = "annbin default (rq-hnsw 2-bit, 2 x k)", int(own)
        qps, rec = xq.shape[0] / statistics.median(points[(name, ef)]), recalls[(name, ef)]
        peers = {p: max(((xq.shape[0] / statistics.median(points[(p, e)]), e) for e in EFS if recalls[(p, e)] >= rec), default=None)
                 for p in methods if not p.startswith("annbin")}
        said = ", ".join(f"{p} {q:,.0f} q/s at ef {e} ({qps / q:.2f}x)" if q else f"{p}: none reaches it" for p, v in peers.items() for q, e in [v or (0, 0)])
        print(f"\nno arguments (ef_search={ef}): recall {rec:.3f} at {qps:,.0f} q/s; the fastest at >= that recall: {said}")
    print("\ncurves (ef: recall / q/s):")
    for name in methods:
        print(f"  {name}: " + ", ".join(f"{ef}: {recalls[(name, ef)]:.3f}/{xq.shape[0] / statistics.median(points[(name, ef)]):,.0f}" for ef in EFS))


if __name__ == "__main__":
    main()
