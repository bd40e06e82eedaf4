"""m2v_mpnet_500k at float32: the same texts, model and order as ``build_m2v_mpnet_500k.py``, kept
at the model's own precision (that set stores float16), so a float16 store can be measured against
float32 sources. Run in the venv that built m2v_mpnet_500k (datasets/README.md), after it:

    .dsvenv/bin/python datasets/build_m2v_mpnet_500k_f32.py --out ~/.cache/annbin/datasets/m2v_mpnet_500k_f32

Reads ``texts.tsv.gz`` of the built set (``--source``) and the cached distilled model beside it;
writes ``base.npy`` (500000, 768) and ``queries.npy`` (1000, 768) float32, L2-normalized, and a
``meta.json`` naming the source set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_m2v_mpnet_500k import embed, load_model, sha256_file  # noqa: E402  (one model, one embedding)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=None, help="the built m2v_mpnet_500k (default: OUT/../m2v_mpnet_500k)")
    args = ap.parse_args()
    source = args.source or args.out.parent / "m2v_mpnet_500k"
    rows = []
    with gzip.open(source / "texts.tsv.gz", "rt") as f:
        next(f)
        for line in f:
            split, row, _src, text = line.rstrip("\n").split("\t", 3)
            rows.append((split, int(row), text))
    base = [t for s, _, t in rows if s == "base"]
    queries = [t for s, _, t in rows if s == "query"]
    model, info = load_model(source.parent / "_models")
    emb = embed(model, base + queries)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "base.npy", emb[: len(base)])
    np.save(args.out / "queries.npy", emb[len(base):])
    meta = {"name": args.out.name, "description": f"{source.name} kept at float32 (same texts, model and order)",
            "model_info": info, "dim": int(emb.shape[1]), "metric": "ip", "normalized": True, "dtype": "float32",
            "n": len(base), "nq": len(queries), "files": {"base": "base.npy", "queries": "queries.npy"},
            "sha256": {n: sha256_file(args.out / n) for n in ("base.npy", "queries.npy")}}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(base):,} + {len(queries):,} float32 rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
