"""What float16 rescoring vectors cost in recall: ``BinaryEmbeddingIndex(store_dtype="float16")``
against float32, the same first stage and candidates, on real sets.

For each oversample, both indexes rescore the same candidates (the first stage and its codes are
built from the same floats with the same settings), so the difference is the rescoring precision
alone. Prints recall@10 against exact float search, the difference, and the bytes of the stored
floats (disk and page cache).

    python benchmarks/float16_recall.py --dataset minilm_wordnet
    python benchmarks/float16_recall.py --dataset m2v_mpnet_500k
    python benchmarks/float16_recall.py --dataset minilm_wordnet --spec default
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin._measure import recall_per_query  # noqa: E402

from _data import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="minilm_wordnet")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--spec", default="flat", help="first stage; 'default' for the no-argument index's")
    ap.add_argument("--oversample", default="2,4,10")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    ds, base, queries, truth = load(args.dataset, dims=None, max_queries=args.queries, k=args.k)
    spec = None if args.spec == "default" else args.spec
    built = {}
    for dtype in ("float32", "float16"):
        index = annbin.BinaryEmbeddingIndex(spec, store_dtype=dtype, metric=ds.metric)
        for lo in range(0, base.shape[0], 100_000):
            index.add(base[lo : lo + 100_000])
        built[dtype] = index
    print(f"{ds.name}: n={base.shape[0]:,} dim={base.shape[1]} nq={queries.shape[0]} spec={built['float32'].spec}")
    print(f"stored floats: float32 {built['float32'].disk_bytes() / 2**20:,.0f} MiB, "
          f"float16 {built['float16'].disk_bytes() / 2**20:,.0f} MiB")
    print(f"{'oversample':>10} {'recall f32':>11} {'recall f16':>11} {'f16 - f32':>10} {'same ids':>9}")
    for over in (int(o) for o in args.oversample.split(",")):
        found = {d: built[d].search(queries, args.k, params={"oversample": over})[1] for d in built}
        r32, r16 = (float(recall_per_query(found[d], truth, args.k).mean()) for d in ("float32", "float16"))
        same = float(np.mean(found["float32"] == found["float16"]))
        print(f"{over:>10} {r32:>11.4f} {r16:>11.4f} {r16 - r32:>+10.4f} {same:>9.4f}")


if __name__ == "__main__":
    main()
