"""Build ``dedup_texts``: >= 500k real English sentences, one per line, duplicates left in, for
``benchmarks/dedup.py`` (64-bit SimHash, then an exact near-duplicate join).

The sentences are those of ``m2v_mpnet_500k`` (``datasets/build_m2v_mpnet_500k.py``: the same five
Debian packages, the same sentence splitting and filters, its readers imported from that script),
but **not deduplicated and not sampled**: every sentence in source order (GCIDE, WordNet, Python
docs, PostgreSQL docs, Perl docs), so the duplicates and near-duplicates that real corpora hold
(a WordNet gloss quoted in GCIDE, a boilerplate sentence repeated on many doc pages) stay in.
Needs only the Debian packages (no model, no pip package)::

    apt-get install dict-gcide wordnet-base python3.11-doc postgresql-doc-15 perl-doc
    python datasets/build_dedup_texts.py          # ~1-2 min; writes <cache>/datasets/dedup_texts/

Writes ``texts.txt`` (UTF-8, one sentence per line, ``\\n`` ends; no sentence holds a newline) and
``meta.json`` (counts per source, distinct counts exact and case-insensitive, sha256 of texts.txt)
into ``--out`` (default ``<cache>/datasets/dedup_texts``; ``<cache>`` is ``$ANNBIN_CACHE``, else
``$XDG_CACHE_HOME/annbin``, else ``~/.cache/annbin``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

NAME = "dedup_texts"


def _m2v_script():  # the sibling build script: its sources and sentence readers, not copied
    spec = importlib.util.spec_from_file_location("build_m2v_mpnet_500k", Path(__file__).with_name("build_m2v_mpnet_500k.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_out() -> Path:
    if os.environ.get("ANNBIN_CACHE"):
        base = Path(os.environ["ANNBIN_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "annbin"
    else:
        base = Path.home() / ".cache" / "annbin"
    return base / "datasets" / NAME


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder to write (default <cache>/datasets/dedup_texts)")
    args = ap.parse_args()
    out = args.out or default_out()
    t0 = time.time()
    m2v = _m2v_script()
    paths = m2v.source_paths()
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        sys.exit(f"missing corpus files {missing}: {m2v.APT}")
    readers = {
        "gcide": m2v.gcide_texts,
        "wordnet": m2v.wordnet_texts,
        "python-doc": lambda p: m2v.html_texts(p, skip=("genindex", "_", "py-modindex", "search")),
        "postgresql-doc": m2v.html_texts,
        "perl-doc": m2v.pod_texts,
    }
    rows = [(source, text) for source, path in paths.items() for text in readers[source](path)]
    texts = [text for _, text in rows]
    if any("\n" in t or "\r" in t for t in texts):
        sys.exit("a sentence holds a line break: the one-per-line file would shift rows")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    body = ("\n".join(texts) + "\n").encode("utf-8")
    (out / "texts.txt").write_bytes(body)
    meta = {
        "name": NAME,
        "description": "English sentences from GCIDE, WordNet, Python, PostgreSQL and Perl docs (Debian packages), "
                       "one per line, in source order, duplicates kept (datasets/build_dedup_texts.py)",
        "n": len(texts),
        "distinct_exact": len(set(texts)),
        "distinct_casefold": len({t.casefold() for t in texts}),
        "per_source": dict(Counter(source for source, _ in rows)),
        "selection": f"m2v_mpnet_500k's sentence filters (>= {m2v.MIN_WORDS} words, <= {m2v.MAX_CHARS} chars, >= "
                     f"{m2v.MIN_LETTER_FRACTION:.0%} letters/spaces); no deduplication, no sampling",
        "sha256": {"texts.txt": hashlib.sha256(body).hexdigest()},
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out / 'texts.txt'}: {meta['n']:,} sentences, {meta['distinct_exact']:,} distinct "
          f"({meta['distinct_casefold']:,} case-insensitively), {meta['per_source']}, in {meta['build_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
