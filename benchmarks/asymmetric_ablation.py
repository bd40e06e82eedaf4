"""What each part of the asymmetric rerank buys: recall@10 after float rescoring of the top R x k.

Run::

    python benchmarks/asymmetric_ablation.py                               # shipped MiniLM set
    python benchmarks/asymmetric_ablation.py --dataset m2v_mpnet_500k
    python benchmarks/asymmetric_ablation.py --dataset m2v_mpnet_500k --dims 256   # a low-dim model

For each code (sign bits; centred; random rotation; ITQ rotation; 2 bits a dimension) the exact
Hamming top ``--candidates`` x k (faiss-flat, ties by id) are ranked three ways and the top R x k
of each ranking are rescored with the float vectors: by Hamming distance (today), by the float
query . +-1 code (codes only), and by RaBitQ's estimator (per-vector factor). ``codes only`` is
the asymmetric estimate itself as the final ranking (no float reads). recall@10 is id overlap with
exact float search; qb is the query's bits in the asymmetric scorer (0 = float query).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import annbin  # noqa: E402
from annbin.embed.encoder import Encoder  # noqa: E402
from annbin.embed.rescore import RescoredIndex  # noqa: E402

from _data import load  # noqa: E402

CODES = (
    ("sign bits", {}),
    ("centred (thresholds = mean)", {"thresholds": "mean"}),
    ("random rotation + centred", {"rotation": "random", "thresholds": "mean"}),
    ("ITQ rotation + centred", {"rotation": "itq", "thresholds": "mean"}),
    ("2 bits, centred", {"thresholds": "mean", "rerank_bits": 2}),
    ("2 bits, ITQ + centred", {"rotation": "itq", "thresholds": "mean", "rerank_bits": 2}),
)


def recall(I: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / ref.shape[1] for a, b in zip(I, ref)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="minilm_wordnet")
    ap.add_argument("--dims", type=int, default=None, help="keep the first N dimensions (renormalized)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=20, help="Hamming candidates per result, the pool every ranking draws from")
    ap.add_argument("--R", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--qb", type=int, nargs="+", default=[4, 0])
    ap.add_argument("--max-queries", type=int, default=None)
    args = ap.parse_args(argv)

    ds, base, queries, gt = load(args.dataset, dims=args.dims, max_queries=args.max_queries, k=args.k)
    k, n, dim = args.k, base.shape[0], base.shape[1]
    print(f"dataset={ds.name} n={n} dim={dim} nq={len(queries)} k={k} candidates={args.candidates}k", flush=True)
    header = " | ".join(f"R={r}" for r in args.R)
    print(f"| code | ranking of the {args.candidates}k Hamming candidates | qb | codes only | {header} |")
    print("|---|---|---:|---:|" + "---:|" * len(args.R))
    for name, options in CODES:
        t0 = time.perf_counter()
        enc = Encoder(seed=0, **options).fit(base)
        encoded = enc.encode(base)
        fit_s = time.perf_counter() - t0
        flat = annbin.FlatIndex(encoded.codes.shape[1] * 8)
        flat.add(encoded.codes)
        _, cand = flat.search(enc.encode_codes(queries), k * args.candidates)  # sorted by (distance, id)
        ham = [recall(RescoredIndex(flat, vectors=base, encoder=enc).rerank_candidates(queries, cand[:, : k * r], k)[1], gt)
               for r in args.R]
        print(f"| {name} | Hamming | - | - | " + " | ".join(f"{x:.3f}" for x in ham) + " |", flush=True)
        rankings = [("float query . (+-1 code)", None)] if options.get("rerank_bits", 1) == 1 else []
        rankings.append(("RaBitQ estimator" if options.get("rerank_bits", 1) == 1 else "2-bit estimator", encoded))
        for label, enc_rows in rankings:
            for qb in args.qb:
                only = RescoredIndex(flat, rerank="asymmetric", encoder=enc, encoded=enc_rows, qb=qb)
                codes_only = recall(only.rerank_candidates(queries, cand, k)[1], gt)
                row = []
                for r in args.R:
                    three = RescoredIndex(flat, rerank="asymmetric", rerank_oversample=r, vectors=base, encoder=enc,
                                          encoded=enc_rows, qb=qb)
                    row.append(recall(three.rerank_candidates(queries, cand, k)[1], gt))
                print(f"| {name} | {label} | {qb} | {codes_only:.3f} | " + " | ".join(f"{x:.3f}" for x in row) + " |", flush=True)
        print(f"(fit + encode {fit_s:.1f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
