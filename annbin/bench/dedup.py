"""The work behind ``annbin dedup``: read codes, float embeddings or texts; find every pair of
near-duplicates (``annbin.near_duplicates``); write the pairs, the groups and the rows to keep.

Inputs, by file
---------------
``.npy`` of uint8, 2-D ``(n, code_size)``
    Packed binary codes, used as they are (``d = 8 * code_size`` bits).
``.npy`` of float16 / float32 / float64, 2-D ``(n, dim)``
    Float embeddings, binarized as ``annbin bench`` does (``annbin.bench.run``): optionally
    projected to ``project_bits`` bits by seeded random hyperplanes, then one bit per dimension,
    ``x > threshold`` with ``thresholds`` ``"zero"`` (sign bits), ``"median"`` or ``"mean"``
    (fitted on the file's own rows, ``annbin.Encoder``).
any other file
    UTF-8 text, one document per line (a line ends at ``\\n``; a trailing ``\\r`` is dropped; an
    empty last line after the final ``\\n`` is not a document), hashed with ``annbin.simhash``
    (``bits`` 64 by default, ``shingle`` 3). Row ``i`` is line ``i + 1``. Empty lines hash to all
    zero bits, so they are duplicates of each other.

Outputs
-------
pairs: ``.npy`` ``(m, 3)`` int64 rows ``i, j, distance`` or ``.jsonl`` ``{"i": .., "j": .., "distance": ..}``
per line, ``i < j``, sorted by distance, then ``i``, then ``j``. groups: ``.npy`` ``(n,)`` int64, each
row's group label (the smallest row of its group; a row in no pair is its own group). keep: ``.npy``
int64 ascending, one row per group (``keep_rule`` ``"first"``: the smallest row; ``"last"``: the
largest), so ``n - len(keep)`` rows are duplicates to drop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import annbin
from annbin._checks import as_floats, check_int
from annbin.embed.encoder import THRESHOLD_RULES, Encoder

__all__ = ["DedupResult", "KEEP_RULES", "keep_rows", "read_input", "run_dedup", "summary_line", "write_pairs"]

KEEP_RULES: tuple[str, ...] = ("first", "last")
PAIR_SUFFIXES: tuple[str, ...] = (".npy", ".jsonl")
_TEXT_BITS = 64
_SHINGLE = 3
_SEED = 0  # the hyperplanes' seed: annbin bench's default (BenchConfig.seed)
_HASH_CHUNK = 50_000  # lines per simhash call: the progress bar's step


@dataclass
class DedupResult:
    """What ``run_dedup`` found: the input's size and kind, the pairs, the groups and the timings."""

    n: int
    d: int
    kind: str  # "codes", "floats" or "text"
    radius: int
    pairs: NDArray[np.int64]
    distances: NDArray[np.int32]
    labels: NDArray[np.int64]
    keep: NDArray[np.int64]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def groups(self) -> int:
        """Groups with more than one member."""
        sizes = np.bincount(self.labels, minlength=self.n) if self.n else np.zeros(0, np.int64)
        return int(np.count_nonzero(sizes > 1))

    @property
    def in_groups(self) -> int:
        """Rows that belong to a group of more than one member."""
        sizes = np.bincount(self.labels, minlength=self.n) if self.n else np.zeros(0, np.int64)
        return int(sizes[sizes > 1].sum())


def _check_suffix(path: str | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must name a {' or '.join(suffixes)} file, got {path!r}")
    return p


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:  # a bad header, a truncated file, an object array
        raise ValueError(f"{str(path)!r} is not a readable .npy file: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise ValueError(f"{str(path)!r} is not a .npy array file (an .npz archive?)")
    return array


def _float_codes(x: np.ndarray, project_bits: int | None, thresholds: str) -> NDArray[np.uint8]:
    feats = np.asarray(as_floats(np.asarray(x), name=f"float embeddings ({x.dtype})"), np.float32)
    if project_bits is not None and project_bits != feats.shape[1]:
        # The hyperplanes of `annbin bench --project-bits` (annbin.bench.run): SimHash of the vectors.
        projection = np.random.default_rng(_SEED).standard_normal((feats.shape[1], project_bits)).astype(np.float32)
        feats = feats @ projection
    return Encoder(thresholds=thresholds, seed=_SEED).fit(feats).encode_codes(feats)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r} is neither .npy nor UTF-8 text (byte {exc.start}: {exc.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _text_codes(lines: list[str], bits: int, shingle: int, progress: bool) -> NDArray[np.uint8]:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(lines), desc="simhash", unit=" lines", disable=not progress) as bar:
        for start in range(0, len(lines), _HASH_CHUNK):
            chunk = lines[start:start + _HASH_CHUNK]
            parts.append(annbin.simhash(chunk, shingle=shingle, bits=bits))
            bar.update(len(chunk))
    return np.concatenate(parts) if parts else annbin.simhash([], shingle=shingle, bits=bits)  # checks the options too


def read_input(path: str | Path, *, bits: int | None = None, shingle: int | None = None, project_bits: int | None = None,
               thresholds: str | None = None, progress: bool = False) -> tuple[NDArray[np.uint8], str]:
    """``(codes, kind)`` from ``path``: packed codes ``(n, code_size)`` uint8 and ``"codes"``,
    ``"floats"`` or ``"text"`` (see the module docstring). ``bits`` and ``shingle`` are the text's
    SimHash options, ``project_bits`` and ``thresholds`` the floats' binarization: an option that
    does not apply to the file's kind is a ``ValueError`` rather than silently ignored."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input {str(p)!r} does not exist or is not a file")
    if thresholds is not None and thresholds not in THRESHOLD_RULES:
        raise ValueError(f"--thresholds must be one of {THRESHOLD_RULES}, got {thresholds!r}")
    if project_bits is not None and check_int(project_bits, "--project-bits", minimum=8) % 8:
        raise ValueError(f"--project-bits must be a multiple of 8, got {project_bits}")
    if p.suffix.lower() != ".npy":
        if thresholds is not None or project_bits is not None:
            raise ValueError("--thresholds / --project-bits apply to float embeddings (.npy), not to a text file")
        lines = _read_lines(p)
        return _text_codes(lines, _TEXT_BITS if bits is None else bits, _SHINGLE if shingle is None else shingle, progress), "text"
    if shingle is not None or bits is not None:
        raise ValueError("--bits / --shingle set a text file's SimHash, not a .npy array's codes")
    x = _read_npy(p)
    if x.ndim != 2:
        raise ValueError(f"{str(p)!r} must hold a 2-D array (n, code_size) of uint8 codes or (n, dim) of floats, got shape {x.shape}")
    if x.dtype == np.uint8:
        if project_bits is not None or thresholds is not None:
            raise ValueError("--project-bits / --thresholds apply to float embeddings; a uint8 .npy holds codes already")
        if x.shape[1] == 0:
            raise ValueError(f"{str(p)!r} holds codes of 0 bytes, shape {x.shape}")
        return np.ascontiguousarray(x), "codes"
    if x.dtype in (np.float16, np.float32, np.float64):
        if x.shape[1] == 0:
            raise ValueError(f"{str(p)!r} holds vectors of dimension 0, shape {x.shape}")
        return _float_codes(x, project_bits, thresholds or "zero"), "floats"
    raise ValueError(f"{str(p)!r} holds dtype {x.dtype}: expected uint8 codes or float16/32/64 embeddings")


def keep_rows(labels: NDArray[np.int64], rule: str = "first") -> NDArray[np.int64]:
    """Rows to keep, ascending int64: one per group of ``labels`` (``(n,)``, label = smallest
    member, as ``annbin.duplicate_groups`` gives), its smallest row (``"first"``) or largest (``"last"``)."""
    if rule not in KEEP_RULES:
        raise ValueError(f"keep rule must be one of {KEEP_RULES}, got {rule!r}")
    n = labels.shape[0]
    if rule == "first":
        return np.flatnonzero(labels == np.arange(n)).astype(np.int64)
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, labels, np.arange(n, dtype=np.int64))
    return np.sort(last[last >= 0])


def write_pairs(path: Path, pairs: NDArray[np.int64], distances: NDArray[np.int32]) -> None:
    """Pairs to ``.npy`` ((m, 3) int64: i, j, distance) or ``.jsonl`` (one object per line)."""
    if path.suffix.lower() == ".npy":
        table = np.empty((pairs.shape[0], 3), np.int64)
        table[:, :2], table[:, 2] = pairs, distances
        np.save(path, table)
        return
    step = 1 << 16  # lines formatted per write: bounded memory on millions of pairs
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, pairs.shape[0], step):
            rows = zip(pairs[start:start + step, 0].tolist(), pairs[start:start + step, 1].tolist(),
                       distances[start:start + step].tolist(), strict=True)
            f.write("".join(json.dumps({"i": i, "j": j, "distance": d}) + "\n" for i, j, d in rows))


def run_dedup(input_path: str | Path, radius: int, *, out: str | None = None, groups: str | None = None, keep: str | None = None,
              keep_rule: str = "first", max_pairs: int = 10_000_000, threads: int | None = None, bits: int | None = None,
              shingle: int | None = None, project_bits: int | None = None, thresholds: str | None = None, progress: bool = False) -> DedupResult:
    """Read ``input_path``, join it with itself at Hamming distance < ``radius``, write what was
    asked for. Every option is checked before the input is read."""
    radius = check_int(radius, "--radius", minimum=1)
    max_pairs = check_int(max_pairs, "--max-pairs", minimum=0)
    if threads is not None:
        threads = check_int(threads, "--threads", minimum=1)
    if keep_rule not in KEEP_RULES:
        raise ValueError(f"--keep-rule must be one of {KEEP_RULES}, got {keep_rule!r}")
    out_path = _check_suffix(out, PAIR_SUFFIXES, "--out")
    groups_path = _check_suffix(groups, (".npy",), "--groups")
    keep_path = _check_suffix(keep, (".npy",), "--keep")
    for target in (out_path, groups_path, keep_path):
        if target is not None and not target.parent.is_dir():
            raise FileNotFoundError(f"cannot write {str(target)!r}: no folder {str(target.parent)!r}")
    t0 = time.perf_counter()
    codes, kind = read_input(input_path, bits=bits, shingle=shingle, project_bits=project_bits, thresholds=thresholds, progress=progress)
    t1 = time.perf_counter()
    pairs, distances = annbin.near_duplicates(codes, radius, num_threads=threads, max_pairs=max_pairs, progress=progress)
    labels = annbin.duplicate_groups(pairs, codes.shape[0])
    t2 = time.perf_counter()
    kept = keep_rows(labels, keep_rule)
    if out_path is not None:
        write_pairs(out_path, pairs, distances)
    if groups_path is not None:
        np.save(groups_path, labels)
    if keep_path is not None:
        np.save(keep_path, kept)
    t3 = time.perf_counter()
    seconds = {"read": t1 - t0, "join": t2 - t1, "write": t3 - t2, "total": t3 - t0}
    return DedupResult(n=codes.shape[0], d=codes.shape[1] * 8, kind=kind, radius=radius, pairs=pairs, distances=distances,
                       labels=labels, keep=kept, seconds=seconds)


def summary_line(result: DedupResult) -> str:
    """One line: items, pairs, groups of more than one, items to drop, seconds."""
    return (f"{result.n:,} items ({result.kind}, {result.d} bits), {result.pairs.shape[0]:,} pairs at distance < {result.radius}, "
            f"{result.groups:,} groups of duplicates ({result.in_groups:,} items), {result.n - result.keep.shape[0]:,} items to drop; "
            f"{result.seconds['total']:.2f} s (read {result.seconds['read']:.2f} s, join {result.seconds['join']:.2f} s)")

