"""Build ``m2v_mpnet_10m``: 10,000,000 + 1,000 distinct real texts, 768-d, for ``benchmarks/scale.py``.

The texts are windows of consecutive sentences: every run of 1, 2, ... ``w`` sentences of one source
(the sentence stream of ``dedup_texts``: GCIDE, WordNet, Python, PostgreSQL and Perl docs in source
order), with ``w`` the smallest length that gives enough distinct windows. That is how documents
are chunked for retrieval (overlapping chunks), and it is the only way to 10M real texts from the
~555k distinct sentences on this machine's Debian packages. Windows that repeat an earlier one
(the same sentences, ignoring case) are dropped; the rest are shuffled with
``numpy.random.default_rng(0)``: the first 1,000 are the queries, the next 10M the base, so every
prefix of the base is a uniform sample and the queries are held out.

Embedding: the model of ``m2v_mpnet_500k`` (a model2vec static model distilled from
all-mpnet-base-v2, PCA over all 768 dims), whose vector of a text is the mean of its tokens'
vectors. A window's vector is therefore the token-weighted mean of its sentences' vectors: each
sentence is encoded once (its mean times its token count), windows are differences of prefix sums
(float64), then L2-normalized and stored as float16 (15.4 GB; float32 would be 30.7 GB). No
truncation at 512 tokens (``max_length=None``); ``meta.json`` records the smallest cosine between
this and ``model.encode`` of the joined text over a sample of windows.

Run in the venv that built m2v_mpnet_500k (datasets/README.md), after ``build_dedup_texts.py``::

    .dsvenv/bin/python datasets/build_m2v_mpnet_10m.py --out ~/.cache/annbin/datasets/m2v_mpnet_10m

Writes ``base.npy`` (10,000,000 x 768 float16), ``queries.npy`` (1,000 x 768 float16),
``windows.npy`` (int64 ``(1,000 + 10,000,000, 2)``: first sentence's line in ``dedup_texts/texts.txt``
and the number of sentences, queries first), ``meta.json`` (counts, checks, sha256 of the arrays).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_m2v_mpnet_500k import load_model, sha256_file  # noqa: E402  (one model for both sets)

N_BASE, N_QUERIES, SEED = 10_000_000, 1_000, 0
CHUNK = 100_000  # windows embedded per block: two float64 gathers of CHUNK x 768 (1.2 GB)
CHECK_WINDOWS = 300


def sentence_stream(dedup_dir: Path) -> tuple[list[str], np.ndarray]:
    """The sentences of ``dedup_texts`` in source order and the row where each source starts."""
    meta = json.loads((dedup_dir / "meta.json").read_text())
    body = (dedup_dir / "texts.txt").read_bytes()
    import hashlib

    if hashlib.sha256(body).hexdigest() != meta["sha256"]["texts.txt"]:
        sys.exit(f"{dedup_dir / 'texts.txt'} fails its sha256: rebuild it (datasets/build_dedup_texts.py)")
    texts = body.decode("utf-8").split("\n")[:-1]
    starts = np.cumsum([0, *meta["per_source"].values()])
    if starts[-1] != len(texts):
        sys.exit("dedup_texts: per-source counts do not add up to the lines of texts.txt")
    return texts, starts


def distinct_windows(texts: list[str], starts: np.ndarray, need: int) -> tuple[np.ndarray, int]:
    """``(start, length)`` of the first ``need``-or-more distinct windows, lengths 1, 2, ... in turn.

    A window is identified by a 64-bit polynomial hash of its sentences' case-insensitive ids
    (sentence i's id: the first row holding the same text), so repeats are found without
    building the window strings.
    """
    first: dict[str, int] = {}
    canon = np.array([first.setdefault(t.casefold(), i) for i, t in enumerate(texts)], dtype=np.uint64)
    n = len(texts)
    base = np.uint64(1_000_003)
    prefix = np.zeros(n + 1, dtype=np.uint64)  # prefix[i] = hash of rows 0..i-1 (wrapping arithmetic)
    with np.errstate(over="ignore"):  # the hash wraps modulo 2**64 on purpose
        for i in range(n):
            prefix[i + 1] = prefix[i] * base + canon[i] + np.uint64(1)
    source = np.searchsorted(starts, np.arange(n), side="right") - 1
    seen: set[int] = set()
    picked: list[np.ndarray] = []
    total, w, power = 0, 0, np.uint64(1)
    while total < need:
        w += 1
        with np.errstate(over="ignore"):
            power = power * base
        s = np.arange(0, n - w + 1)
        s = s[source[s] == source[s + w - 1]]  # a window stays inside one source
        with np.errstate(over="ignore"):
            h = (prefix[s + w] - prefix[s] * power) ^ np.uint64(w)
        keep = np.zeros(len(s), dtype=bool)
        for j, value in enumerate(h.tolist()):
            if value not in seen:
                seen.add(value)
                keep[j] = True
        picked.append(np.stack([s[keep], np.full(int(keep.sum()), w)], axis=1))
        total += int(keep.sum())
        print(f"windows of {w} sentence(s): {int(keep.sum()):,} distinct, {total:,} in all", flush=True)
    return np.concatenate(picked).astype(np.int64), w


def sentence_sums(model: object, texts: list[str]) -> np.ndarray:
    """Prefix sums (float64, ``(n + 1, dim)``) of each sentence's token-vector sum."""
    from tqdm.auto import tqdm

    dim = model.embedding.shape[1]  # type: ignore[attr-defined]
    prefix = np.zeros((len(texts) + 1, dim), dtype=np.float64)
    for s in tqdm(range(0, len(texts), 20_000), desc="sentences", unit="block"):
        block = texts[s:s + 20_000]
        counts = np.array([len(ids) for ids in model.tokenize(block)], dtype=np.float64)  # type: ignore[attr-defined]
        means = model.encode(block, normalize=False, max_length=None, batch_size=2048)  # type: ignore[attr-defined]
        prefix[s + 1:s + 1 + len(block)] = means * counts[:, None]
    np.cumsum(prefix, axis=0, out=prefix)
    return prefix


def window_vectors(prefix: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """L2-normalized float32 vectors of ``(start, length)`` windows."""
    v = prefix[windows[:, 0] + windows[:, 1]] - prefix[windows[:, 0]]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(v).all():
        sys.exit("a window has no known tokens or a non-finite vector")
    return (v / norms).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sentences", type=Path, default=None, help="the built dedup_texts (default: OUT/../dedup_texts)")
    args = ap.parse_args()
    t_start = time.time()
    dedup_dir = args.sentences or args.out.parent / "dedup_texts"
    if not (dedup_dir / "texts.txt").is_file():
        sys.exit(f"{dedup_dir} is not built: python datasets/build_dedup_texts.py --out {dedup_dir}")
    texts, starts = sentence_stream(dedup_dir)
    windows, longest = distinct_windows(texts, starts, N_BASE + N_QUERIES)
    available = len(windows)
    order = np.random.default_rng(SEED).permutation(available)[: N_BASE + N_QUERIES]
    windows = windows[order]  # queries first, then the base

    model, model_info = load_model(dedup_dir.parent / "_models")
    prefix = sentence_sums(model, texts)
    check = windows[np.random.default_rng(1).choice(len(windows), CHECK_WINDOWS, replace=False)]
    direct = model.encode([" ".join(texts[s:s + w]) for s, w in check], max_length=None)  # type: ignore[attr-defined]
    direct = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    agreement = float((window_vectors(prefix, check) * direct).sum(axis=1).min())
    print(f"prefix-sum vectors vs model.encode of the joined text: min cosine {agreement:.6f} "
          f"over {CHECK_WINDOWS} windows", flush=True)
    if agreement < 0.999:
        sys.exit("window vectors disagree with the model's own encoding")

    from tqdm.auto import tqdm

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", "base.npy", "queries.npy", "windows.npy"):
        (out / name).unlink(missing_ok=True)
    np.save(out / "queries.npy", window_vectors(prefix, windows[:N_QUERIES]).astype(np.float16))
    base = np.lib.format.open_memmap(out / "base.npy", mode="w+", dtype=np.float16, shape=(N_BASE, prefix.shape[1]))
    for s in tqdm(range(0, N_BASE, CHUNK), desc="base vectors", unit="block"):
        rows = windows[N_QUERIES + s:N_QUERIES + s + CHUNK]
        base[s:s + len(rows)] = window_vectors(prefix, rows)
    base.flush()
    del base
    np.save(out / "windows.npy", windows)
    lengths = windows[N_QUERIES:, 1]
    meta = {
        "name": out.name,
        "description": "model2vec static embeddings (m2v_mpnet_500k's model, 768-d) of 10M distinct windows of "
                       "1.. consecutive sentences from GCIDE, WordNet, Python/PostgreSQL/Perl docs",
        "model_info": model_info, "dim": int(prefix.shape[1]), "metric": "ip", "normalized": True, "dtype": "float16",
        "n": N_BASE, "nq": N_QUERIES,
        "files": {"base": "base.npy", "queries": "queries.npy", "windows": "windows.npy"},
        "sentences": {"source": "dedup_texts/texts.txt", "n": len(texts),
                      "sha256": json.loads((dedup_dir / "meta.json").read_text())["sha256"]["texts.txt"]},
        "windows": {"longest": longest, "distinct_available": available,
                    "base_length_mean": round(float(lengths.mean()), 2),
                    "base_length_p50": int(np.median(lengths))},
        "selection": f"all distinct windows (case-insensitive sentence sequences) of 1..{longest} sentences inside "
                     f"one source, shuffled with numpy default_rng({SEED}); first {N_QUERIES} queries, next {N_BASE} base",
        "check": {"windows": CHECK_WINDOWS, "min_cosine_vs_model_encode": round(agreement, 6)},
        "sha256": {},
    }
    meta["sha256"] = {name: sha256_file(out / name) for name in ("base.npy", "queries.npy")}
    meta["build_seconds"] = round(time.time() - t_start, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} in {meta['build_seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
