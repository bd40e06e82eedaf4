"""How build time, RAM, disk, recall and speed grow with N: ``BinaryEmbeddingIndex`` and hnswlib on
prefixes of ``m2v_mpnet_10m`` (10M real texts, 768-d; ``datasets/build_m2v_mpnet_10m.py``).

Each (method, N) runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its own:
the base rows are read with plain reads (no memory map of the dataset in the child's RSS), added in
chunks, then searched with one thread (1,000 held-out queries, k=10, recall@10 against exact float
search over the same prefix). annbin: the given first stage at its settings, then ``annbin.tune`` to
``--target``; single-query p50/p99 warm (floats in the page cache) and cold (the floats file
dropped from the page cache with ``posix_fadvise`` before each query). hnswlib: an ``ef`` sweep,
at sizes where its index fits in RAM; elsewhere its projected RAM. Ground truth for every prefix
is computed in one blockwise faiss pass and cached. Rows go to ``--out`` (JSON lines, ``kind:
"scale"``); ``annbin report --results OUT`` plots each figure against N.

    python benchmarks/scale.py --sizes 100k,1M,3M,10M --hnswlib-sizes 100k,1M
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
K = 10


def parse_n(text: str) -> int:
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def dataset_dir(name: str) -> Path:
    from annbin.bench.recipes import built_dir, is_built

    path = built_dir() / name
    if not is_built(name):
        sys.exit(f"{name} is not built: annbin datasets build {name} (see datasets/README.md)")
    return path


# ------------------------------------------------------------------------------- measuring

def scale_nlist(n: int) -> int:
    from annbin.embed.rqivf import MAX_NLIST

    return min(MAX_NLIST, round(4 * n ** 0.5))


def rss_now() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "RssAnon", "RssFile")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) * 1024
    return fields


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def loaded_rss(path: Path) -> dict[str, int]:
    """RSS of a fresh process that loaded the saved index and ran one search (the floats stay
    memory-mapped): what serving it costs, without the build's leftovers."""
    code = ("import json, sys, numpy as np, annbin; sys.path.insert(0, sys.argv[2]); from scale import rss_now; "
            "before = rss_now(); index = annbin.load(sys.argv[1]); index.search(np.ones((1, index.dim), np.float32), 10); "
            "after = rss_now(); print(json.dumps({'before': before, 'after': after}))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(HERE)], capture_output=True, text=True, check=True)
    fields = json.loads(out.stdout.strip().splitlines()[-1])
    return {"RssAnon": fields["after"]["RssAnon"], "RssAnon_start": fields["before"]["RssAnon"], "VmRSS": fields["after"]["VmRSS"]}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    from annbin._measure import recall_per_query

    return float(recall_per_query(found[:, :K], truth[:, :K], K).mean())


def batch_qps(search: Any, queries: np.ndarray, repeats: int = 3) -> tuple[float, np.ndarray]:
    times, ids = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        ids = search(queries)
        times.append(time.perf_counter() - t)
    return len(queries) / float(np.median(times)), ids  # type: ignore[return-value]


def latencies(search: Any, queries: np.ndarray, before: Any = None) -> dict[str, float]:
    ms = []
    for q in queries:
        if before is not None:
            before()
        t = time.perf_counter()
        search(q[None])
        ms.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def add_all(add: Any, ds: Path, n: int, chunk: int) -> float:
    from tqdm.auto import tqdm

    from annbin.bench.formats import read_npy_rows  # plain reads: the dataset never counts in the RSS

    t = time.perf_counter()
    with tqdm(total=n, desc=f"add {n:,}", unit=" rows", unit_scale=True, file=sys.stderr) as bar:
        for lo in range(0, n, chunk):
            rows = read_npy_rows(ds / "base.npy", lo, min(n, lo + chunk))
            add(rows)
            bar.update(rows.shape[0])
    return time.perf_counter() - t


def run_annbin(args: argparse.Namespace, ds: Path, n: int, truth: np.ndarray) -> dict[str, Any]:
    import annbin

    queries = np.load(ds / "queries.npy").astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.workdir))
    try:
        spec = args.spec.format(nlist=scale_nlist(n)) or None
        index = annbin.BinaryEmbeddingIndex(spec, store_vectors=work / "build.npy", store_dtype=args.store_dtype,
                                            threads=args.threads)
        build_s = add_all(index.add, ds, n, args.chunk)
        t = time.perf_counter()
        index.build()
        build_s += time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        after_build = rss_now()
        index.save(work / "index")
        row: dict[str, Any] = {"method": "annbin", "spec": index.spec, "store_dtype": args.store_dtype, "build_s": round(build_s, 1),
                               "peak_rss_bytes": peak, "rss_after_build": after_build, "memory_bytes": int(index.memory_bytes()),
                               "disk_bytes": dir_bytes(work / "index"), "float_bytes": int(index.disk_bytes())}
        del index
        row["rss_loaded"] = loaded_rss(work / "index")
        index = annbin.load(work / "index")  # what a user serves: the saved index, floats memory-mapped
        floats = next(p for p in (work / "index").rglob("vectors*.npy"))
        search = lambda q: index.search(q, K)[1]  # noqa: E731
        for phase in ("default", "tuned"):
            if phase == "tuned":
                t = time.perf_counter()
                result = annbin.tune(index, queries, target_recall=args.target, ground_truth=truth[:, :K], k=K)
                row["tune_s"] = round(time.perf_counter() - t, 1)
                row["tuned_holdout_recall"] = round(float(result.recall_holdout), 4)
            qps, ids = batch_qps(search, queries)
            row[phase] = {"params": index.get_search_params(), "recall": round(recall(ids, truth), 4), "qps": round(qps, 1),
                          "warm": latencies(search, queries[: args.latency_queries]),
                          "cold": latencies(search, queries[: args.cold_queries], lambda: drop_from_page_cache(floats))}
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_hnswlib(args: argparse.Namespace, ds: Path, n: int, truth: np.ndarray) -> dict[str, Any]:
    import hnswlib

    queries = unit(np.load(ds / "queries.npy").astype(np.float32))  # "ip" on unit rows: the cosine annbin ranks by
    before = rss_now()["RssAnon"]
    index = hnswlib.Index(space="ip", dim=queries.shape[1])
    index.init_index(max_elements=n, M=args.M, ef_construction=args.ef_construction, random_seed=0)
    index.set_num_threads(args.threads if args.threads > 0 else os.cpu_count() or 1)
    build_s = add_all(lambda rows, at=[0]: (index.add_items(unit(rows), np.arange(at[0], at[0] + len(rows))),
                                           at.__setitem__(0, at[0] + len(rows))), ds, n, args.chunk)
    row: dict[str, Any] = {"method": "hnswlib", "spec": f"M={args.M},ef_construction={args.ef_construction}",
                           "build_s": round(build_s, 1), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                           "memory_bytes": rss_now()["RssAnon"] - before}
    index.set_num_threads(1)
    sweep = []
    for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        index.set_ef(ef)
        search = lambda q: index.knn_query(q, K)[0].astype(np.int64)  # noqa: E731
        qps, ids = batch_qps(search, queries)
        sweep.append({"ef": ef, "recall": round(recall(ids, truth), 4), "qps": round(qps, 1)})
    row["sweep"] = sweep
    best = next((s for s in sweep if s["recall"] >= args.target), sweep[-1])
    index.set_ef(best["ef"])
    row["tuned"] = {**best, "warm": latencies(lambda q: index.knn_query(q, K), queries[: args.latency_queries])}
    return row


# ------------------------------------------------------------------------------- driver

def child(args: argparse.Namespace) -> None:
    from annbin.bench.datasets import prefix_truth

    ds = dataset_dir(args.dataset)
    truth = prefix_truth(args.dataset, [args.n])[args.n]
    run = run_annbin if args.child == "annbin" else run_hnswlib
    label = f"annbin {args.spec.replace('{nlist}', 'min(4 sqrt(N), 4096)') or 'default'}" if args.child == "annbin" else "hnswlib"
    row = {"kind": "scale", "dataset": args.dataset, "n": args.n, "threads": args.threads, "label": label,
           **run(args, ds, args.n, truth)}
    print("ROW " + json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="m2v_mpnet_10m")
    ap.add_argument("--sizes", default="100k,1M,3M,10M")
    ap.add_argument("--hnswlib-sizes", default="100k,1M", help="sizes hnswlib runs at (the others: projected RAM)")
    ap.add_argument("--spec", default="rq-ivf:nlist={nlist}",
                    help="annbin first stage ('' = the no-argument default); {nlist} becomes 4 sqrt(N), at most 4,096")
    ap.add_argument("--methods", default="annbin,hnswlib")
    ap.add_argument("--store-dtype", default="float16")
    ap.add_argument("--threads", type=int, default=2, help="build threads (searches use one)")
    ap.add_argument("--chunk", type=int, default=250_000, help="rows an add")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--latency-queries", type=int, default=1000)
    ap.add_argument("--cold-queries", type=int, default=200)
    ap.add_argument("--workdir", default=None, help="where the index files go (default: the temp dir)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.jsonl")
    ap.add_argument("--child", choices=("annbin", "hnswlib"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sizes = [parse_n(s) for s in args.sizes.split(",")]
    hnsw_sizes = [parse_n(s) for s in args.hnswlib_sizes.split(",") if s]
    from annbin.bench.datasets import prefix_truth

    prefix_truth(args.dataset, sizes, progress=True)  # one pass for every prefix, before any child
    args.out.parent.mkdir(parents=True, exist_ok=True)
    passthrough = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                   if name not in ("sizes", "hnswlib_sizes", "methods", "child", "n", "out") and value is not None]
    for n in sizes:
        methods = args.methods.split(",")
        for method in [m for m in methods if m == "annbin" or (m == "hnswlib" and n in hnsw_sizes)]:
            print(f"--- {method} at n={n:,}", flush=True)
            proc = subprocess.run([sys.executable, __file__, *passthrough, "--child", method, "--n", str(n)],
                                  stdout=subprocess.PIPE, text=True)
            rows = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
            if proc.returncode or not rows:
                print(f"{method} at n={n:,} failed (exit {proc.returncode})", flush=True)
                continue
            with args.out.open("a") as f:
                f.write(json.dumps(rows[0]) + "\n")
            print(json.dumps(rows[0]), flush=True)


if __name__ == "__main__":
    main()
