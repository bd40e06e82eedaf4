"""MIH now against MIH at an older commit, in one process: speed and memory of a layout change.

The older ``annbin`` package is extracted from git (``git archive``) into a temporary folder and
imported as ``annbin_old`` (its own imports rewritten), so both versions search the same index
data and queries on the same machine state: the two indexes alternate round by round (who goes
first alternates too), each round 1,000 fresh clustered queries (``mih_vs_flat``'s generator),
k=10, one thread, thread CPU time; D and I must be equal in every round.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mih_vs_commit.py --commit 026dc5f --bits 64 --rounds 31

``--commit 026dc5f`` is the last commit with dense bucket arrays (before issue 13's compact tables).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import faiss  # noqa: E402
import mih_vs_flat as mvf  # noqa: E402

from annbin.index.mih.index import MIHIndex  # noqa: E402


def import_old(commit: str, where: Path):  # type: ignore[no-untyped-def]
    """``annbin.index.mih.index.MIHIndex`` as it was at ``commit``, imported as ``annbin_old``."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "annbin"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(where, filter="data")
    (where / "annbin").rename(where / "annbin_old")
    for path in (where / "annbin_old").rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bannbin\.", "annbin_old.", text)
        text = re.sub(r"^(\s*)(from annbin|import annbin)\b", r"\1\2_old", text, flags=re.M)
        path.write_text(text)
    sys.path.insert(0, str(where))
    from annbin_old.index.mih import MIHIndex as OldMIH  # type: ignore[import-not-found]

    return OldMIH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="026dc5f", help="the older commit (default 026dc5f: dense bucket arrays)")
    parser.add_argument("--bits", type=int, default=64, choices=(64, 128, 256))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=0, help="substrings for both (default: 3 / 6 / 13 by bits)")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print("warning: OMP_WAIT_POLICY is not PASSIVE", file=sys.stderr)
    faiss.omp_set_num_threads(1)
    m = args.m or {64: 3, 128: 6, 256: 13}[args.bits]
    cfg = mvf.Config(kind="clustered", d=args.bits, n=args.n)
    xb, xq = mvf.make_data(cfg, 1000 * (args.rounds + 1), mvf.DEFAULT_FLIP.get(args.bits, 0.08), 1000, 0)
    with tempfile.TemporaryDirectory() as tmp:
        OldMIH = import_old(args.commit, Path(tmp))
        new, old = MIHIndex(args.bits, m=m, num_threads=1), OldMIH(args.bits, m=m)
        for index in (new, old):
            index.add(xb)
            index.search(xq[:1000], 10)  # builds, and warms up
        times: dict[str, list[float]] = {"new": [], "old": []}
        for r in range(args.rounds):
            q = xq[1000 * (r + 1) :][:1000]
            pair = [("new", new), ("old", old)] if r % 2 == 0 else [("old", old), ("new", new)]
            out = {}
            for name, index in pair:
                t = time.thread_time()
                out[name] = index.search(q, 10)
                times[name].append(time.thread_time() - t)
            if not all((a == b).all() for a, b in zip(out["new"], out["old"])):
                raise SystemExit(f"round {r}: the two versions disagree")
            print(f"round {r + 1}/{args.rounds}: new {1000 * times['new'][-1]:.1f} ms, old {1000 * times['old'][-1]:.1f} ms",
                  file=sys.stderr, flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        pairs = statistics.median(o / n for n, o in zip(times["new"], times["old"]))
        print(f"| {args.bits}-bit clustered, {args.n:,} codes, m={m} | {args.rounds} | {1000 * med['new']:.1f} | {1000 * med['old']:.1f} "
              f"| {med['old'] / med['new']:.3f} | {pairs:.3f} | {new.memory_bytes() / 2**20:.1f} MiB | {old.memory_bytes() / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
