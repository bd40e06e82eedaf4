"""Multi-index hashing tables: substring layout, substring extraction and the direct-address tables.

A code of ``d`` bits is split into ``m`` disjoint, contiguous substrings whose lengths differ by at
most one bit. Bit ``p`` of a code is bit ``7 - p % 8`` of byte ``p // 8`` (numpy ``packbits``
order); which bit order is used does not matter for Hamming distance, only that codes and queries
are split the same way.

Each substring gets a direct-address table in CSR form (``MIHTable``): the positions of the codes
(in the index's insertion order) sorted by substring value, and one int64 per possible substring
value holding where its bucket starts in that order and how many codes it has. A table also keeps
a copy of the codes in bucket order, so verifying a bucket's candidates reads contiguous memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int

#: Longest substring a direct-address table takes (2**24 int64 buckets are 128 MiB per table).
MAX_SUBSTRING_BITS = 24
#: Per-table copies of the codes in bucket order (contiguous verification reads) are made while
#: they take at most this much in all; beyond it (long codes, many tables) the tables share one
#: copy in insertion order and verification reads it through ``rows``.
COPY_WORDS_MAX_BYTES = 1 << 30
#: ... and only for at most this many tables: m copies cost m x the codes' bytes, and codes long
#: enough to need more tables (384 bits and up at any N) have neighbours too far for MIH to beat a
#: scan, so their searches mostly fall back and the copies would be memory spent for nothing.
COPY_MAX_TABLES = 16
#: Probes read a table's occupancy bits before its buckets only while at most this fraction of its
#: buckets is non-empty (1M clustered 64-bit codes fill 12-22% of 21/22-bit tables, 10M fill 73-91%).
FILTER_MAX_FILL = 0.5


def check_m(m: object, d: int) -> int:
    """Validate an explicit number of substrings for ``d``-bit codes.

    ``1 <= m <= d`` and the longest substring, ``ceil(d / m)`` bits, at most ``MAX_SUBSTRING_BITS``.
    """
    m = check_int(m, "m", minimum=1)
    if m > d:
        raise ValueError(f"m must be <= d = {d} (each substring needs at least one bit), got m={m}")
    if -(-d // m) > MAX_SUBSTRING_BITS:
        raise ValueError(
            f"m={m} splits {d}-bit codes into substrings of up to {-(-d // m)} bits; direct-address "
            f"tables take at most {MAX_SUBSTRING_BITS} bits, so m must be >= {-(-d // MAX_SUBSTRING_BITS)}"
        )
    return m


def default_m(d: int, n: int) -> int:
    """The paper's rule ``m ~ d / log2(n)``, rounded, kept within ``[ceil(d / 24), d]``.

    Substrings of about ``log2(n)`` bits put about one code in each bucket on uniform data; fewer,
    longer substrings are usually better on clustered data, where neighbours are close.
    """
    lo = -(-d // MAX_SUBSTRING_BITS)
    m = round(d / math.log2(max(n, 4)))
    return int(min(max(m, lo), d))


def substring_layout(d: int, m: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start bit and length of each of the ``m`` substrings (the first ``d % m`` get one bit more)."""
    lengths = np.full(m, d // m, dtype=np.int64)
    lengths[: d % m] += 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


def extract_substrings(codes: NDArray[np.uint8], starts: NDArray[np.int64], lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """Substring values of ``codes`` ``(n, d // 8)`` uint8 as int64 ``(n, m)``."""
    n = codes.shape[0]
    out = np.empty((n, starts.size), dtype=np.int64)
    for t, (s, ln) in enumerate(zip(starts.tolist(), lengths.tolist())):
        first, last = s // 8, (s + ln - 1) // 8
        acc = np.zeros(n, dtype=np.int64)
        for b in range(first, last + 1):  # at most 4 bytes: ln <= 24
            acc <<= 8
            acc |= codes[:, b]
        acc >>= 8 * (last + 1) - (s + ln)
        acc &= (1 << ln) - 1
        out[:, t] = acc
    return out


def to_words(codes: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Codes ``(n, d // 8)`` uint8 as uint64 words ``(n, ceil(d / 64))``, zero padded.

    XOR and popcount of the words give the Hamming distance; padding bits are zero on both sides.
    """
    n, cs = codes.shape
    w = -(-cs // 8)
    if cs == 8 * w:
        return np.ascontiguousarray(codes).view(np.uint64)
    padded = np.zeros((n, 8 * w), dtype=np.uint8)
    padded[:, :cs] = codes
    return padded.view(np.uint64)


@lru_cache(maxsize=256)
def popcount_masks(length: int, r: int) -> NDArray[np.int64]:
    """All ``length``-bit integers with exactly ``r`` bits set, ascending, int64 (read-only)."""
    if r < 0 or r > length:
        masks = np.empty(0, dtype=np.int64)
    elif r == 0:
        masks = np.zeros(1, dtype=np.int64)
    elif 2 * r > length:
        masks = np.sort(popcount_masks(length, length - r) ^ ((1 << length) - 1))
    elif math.comb(length, r) * length <= 1 << 22:
        prev = popcount_masks(length, r - 1)
        bits = np.left_shift(1, np.arange(length, dtype=np.int64))
        grown = (prev[:, None] | bits[None, :]).ravel()
        masks = np.unique(grown[np.bitwise_count(grown) == r])
    else:
        every = np.arange(1 << length, dtype=np.int64)
        masks = every[np.bitwise_count(every) == r]
    masks.setflags(write=False)
    return masks


@lru_cache(maxsize=64)
def occupancy_probes(length: int, r: int) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """``popcount_masks(length, r)`` split for a lookup in a table's occupancy bitmap (read-only).

    A key ``sub ^ mask`` is bit ``(sub ^ mask) & 7`` of byte ``(sub ^ mask) >> 3``, i.e. of byte
    ``(sub >> 3) ^ (mask >> 3)``. Returns ``mask >> 3`` and, for each of the 8 values of
    ``sub & 7``, the bit index of every mask: ``lo[sub & 7, i] = (sub & 7) ^ (mask_i & 7)``
    (uint8 ``(8, nmasks)``), so a batch of probes needs no int64 pass beyond the byte index.
    """
    masks = popcount_masks(length, r)
    hi = masks >> 3
    lo = np.arange(8, dtype=np.uint8)[:, None] ^ (masks & 7).astype(np.uint8)[None, :]
    hi.setflags(write=False)
    lo.setflags(write=False)
    return hi, lo


@dataclass
class MIHTable:
    """One substring's direct-address table (CSR).

    ``buckets``: int64 ``(2**length,)``, ``lo << 32 | count`` for a non-empty bucket (its codes are
    positions ``lo .. lo + count - 1``) and 0 for an empty one; ``occupancy``: uint8
    ``(ceil(2**length / 8),)``, one bit per bucket (``np.packbits`` little bit order: bucket ``b``
    is bit ``b & 7`` of byte ``b >> 3``), set if it is non-empty: 64 times smaller than
    ``buckets`` (512 KiB for 22 bits: it stays in L2 cache), so the probes (most of which hit
    empty buckets at radius >= 2) read it first and read ``buckets`` only where it says there is
    something (``filtered``: only when at most ``FILTER_MAX_FILL`` of the buckets are non-empty;
    in fuller tables most probes find something and the filter is a wasted read);
    ``rows``: int32 ``(n,)`` insertion-order positions sorted by substring value; ``words``: uint64
    ``(W, n)``, one contiguous array per 64-bit word: the codes in bucket order (``shared`` False),
    or the codes in insertion order shared by all tables, to be read at ``rows[position]``.
    """

    length: int
    buckets: NDArray[np.int64]
    occupancy: NDArray[np.uint8]
    rows: NDArray[np.int32]
    words: NDArray[np.uint64]
    shared: bool = False
    filtered: bool = True

    @property
    def nbytes(self) -> int:
        """Bytes this table holds (a shared ``words`` array is counted by its owner, not here)."""
        return int(self.buckets.nbytes + self.occupancy.nbytes + self.rows.nbytes + (0 if self.shared else self.words.nbytes))


def build_tables(words: NDArray[np.uint64], subs: NDArray[np.int64], lengths: NDArray[np.int64]) -> list[MIHTable]:
    """One ``MIHTable`` per substring for codes given as ``words`` ``(n, W)`` and their substring
    values ``subs`` ``(n, m)``."""
    n = words.shape[0]
    if n >= 2**31 - 1:
        raise ValueError(f"MIHIndex holds fewer than 2**31 codes, got {n}")
    shared = None
    if lengths.size * words.nbytes > COPY_WORDS_MAX_BYTES or lengths.size > COPY_MAX_TABLES:
        shared = np.ascontiguousarray(words.T)
    tables = []
    for t, length in enumerate(lengths.tolist()):
        sub = subs[:, t]
        rows = np.argsort(sub, kind="stable").astype(np.int32)
        counts = np.bincount(sub, minlength=1 << length)
        buckets = np.cumsum(counts)
        buckets -= counts
        buckets <<= 32
        buckets |= counts
        occupied = counts != 0
        buckets[~occupied] = 0
        filtered = bool(np.count_nonzero(occupied) <= FILTER_MAX_FILL * occupied.size)
        bits = np.packbits(occupied, bitorder="little")
        if shared is None:
            tables.append(MIHTable(length, buckets, bits, rows, np.ascontiguousarray(words[rows].T), filtered=filtered))
        else:
            tables.append(MIHTable(length, buckets, bits, rows, shared, shared=True, filtered=filtered))
    return tables
