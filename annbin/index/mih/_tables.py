"""Multi-index hashing tables: substring layout, substring extraction and the direct-address tables.

A code of ``d`` bits is split into ``m`` disjoint, contiguous substrings whose lengths differ by at
most one bit. Bit ``p`` of a code is bit ``7 - p % 8`` of byte ``p // 8`` (numpy ``packbits``
order); which bit order is used does not matter for Hamming distance, only that codes and queries
are split the same way.

Each substring gets a direct-address table in compact CSR form (``MIHTable``): the rows of the
codes (in the index's main storage, ascending id order) sorted by substring value, one occupancy
bit per possible substring value, and the start and size of each non-empty bucket (located by a
rank over the occupancy bits). A table over few substrings also keeps a copy of the codes in bucket order,
so verifying a bucket's candidates reads contiguous memory; otherwise the tables share the
index's own codes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from annbin._checks import check_int

#: Longest substring a direct-address table takes (2**24 int64 buckets are 128 MiB per table).
MAX_SUBSTRING_BITS = 24
#: Per-table copies of the codes in bucket order (contiguous verification reads) are made while
#: they take at most this much in all; beyond it the tables share the index's own codes (main
#: storage, row order) and verification reads them through ``rows``.
COPY_WORDS_MAX_BYTES = 1 << 30
#: ... and only for at most this many tables: each copy costs the codes' bytes again, and codes long
#: enough to need more tables (384 bits and up at any N) have neighbours too far for MIH to beat a
#: scan; sharing saves memory at about a quarter of the speed (benchmarks/RESULTS.md).
COPY_MAX_TABLES = 16


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


def substring_masks(d: int, starts: NDArray[np.int64], lengths: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Each substring's bits as a mask over ``to_words``' words: uint64 ``(m, ceil(d / 64))``, so
    that ``popcount(xor & mask[t])`` summed over the words is the distance of substring ``t``."""
    bits = np.zeros((starts.size, d), dtype=bool)
    for t, (s, ln) in enumerate(zip(starts.tolist(), lengths.tolist())):
        bits[t, s : s + ln] = True
    return to_words(np.packbits(bits, axis=1))


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
    """One substring's direct-address table, in compact CSR form.

    A probe reads the occupancy bits first (``2**length / 8`` bytes: 512 KiB for 22 bits, so they
    stay in L2 cache), and only the non-empty buckets go further: 8 bytes per non-empty bucket
    instead of 8 per possible bucket (a dense array: 32 MiB for a 22-bit table, whatever n).

    Parameters
    ----------
    length : int
        Bits of the substring this table indexes (at most ``MAX_SUBSTRING_BITS``).
    occupancy : ndarray of uint8
        One bit per bucket (``np.packbits`` little bit order: bucket ``b`` is bit ``b & 7`` of byte
        ``b >> 3``), set if it is non-empty, zero padded to whole uint64 words.
    ranks : ndarray of int64, shape (ceil(2**length / 64),)
        How many non-empty buckets precede each 64-bucket word of ``occupancy`` (int64 spares the
        probe a cast, for 1/8 byte a bucket): a non-empty bucket's rank is ``ranks[b >> 6]`` plus
        a popcount.
    buckets : ndarray of int64, shape (nonempty,)
        ``start << 32 | count`` of each non-empty bucket in rank order: where its positions start
        in ``rows`` and how many. One random read gives both (1.04-1.06x faster searches than a
        uint32 start per bucket, by an A/B).
    rows : ndarray of int32, shape (n,)
        Main-storage rows sorted by substring value.
    words : ndarray of uint64, shape (n, W)
        The codes in bucket order (``shared`` False: verification reads contiguous memory), or the
        main storage's codes in row order shared by all tables (``shared`` True: read at
        ``rows[position]``, a view of memory the index owns, not counted here).
    shared : bool
        Whether ``words`` is the index's shared codes rather than this table's own copy.
    """

    length: int
    occupancy: NDArray[np.uint8]
    ranks: NDArray[np.int64]
    buckets: NDArray[np.int64]
    rows: NDArray[np.int32]
    words: NDArray[np.uint64]
    shared: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes this table holds (a shared ``words`` array is counted by its owner, not here)."""
        own = self.occupancy.nbytes + self.ranks.nbytes + self.buckets.nbytes + self.rows.nbytes
        return int(own + (0 if self.shared else self.words.nbytes))

    @property
    def occupancy64(self) -> NDArray[np.uint64]:
        return self.occupancy.view(np.uint64)

    def positions(self) -> NDArray[np.int32]:
        """Where each row sits in this table's bucket order: int32 ``(n,)``, the inverse of ``rows``."""
        out = np.empty(self.rows.size, dtype=np.int32)
        out[self.rows] = np.arange(self.rows.size, dtype=np.int32)
        return out

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays that, with the shared codes, restore this table (``from_state``); on disk each
        non-empty bucket keeps only its start (uint32, then ``n``): half the bytes."""
        starts = np.empty(self.buckets.size + 1, dtype=np.uint32)
        starts[:-1] = self.buckets >> 32
        starts[-1] = self.rows.size
        return {f"{prefix}occupancy": self.occupancy, f"{prefix}starts": starts, f"{prefix}rows": self.rows}

    @classmethod
    def from_state(cls, length: int, arrays: dict[str, np.ndarray], prefix: str, words: NDArray[np.uint64],
                   copy: bool) -> MIHTable:
        """A table from ``state``'s arrays, checked against ``length`` and the ``words`` ``(n, W)``
        it indexes (``ValueError`` names what does not fit); ``ranks`` is recomputed."""
        occ, starts, rows = (arrays.get(prefix + name) for name in ("occupancy", "starts", "rows"))
        if occ is None or starts is None or rows is None:
            raise ValueError(f"stored MIH table {prefix!r} is incomplete")
        n = words.shape[0]
        nwords = -(-(1 << length) // 64)
        if occ.dtype != np.uint8 or occ.shape != (8 * nwords,):
            raise ValueError(f"stored MIH table {prefix!r}: occupancy must be uint8 ({8 * nwords},), got {occ.dtype} {occ.shape}")
        nonempty = int(np.bitwise_count(occ).sum(dtype=np.int64))
        if starts.dtype != np.uint32 or starts.shape != (nonempty + 1,) or (nonempty and (int(starts[0]) != 0 or int(starts[-1]) != n)):
            raise ValueError(f"stored MIH table {prefix!r}: starts do not match its occupancy and {n} codes")
        if nonempty and not (starts[1:] > starts[:-1]).all():
            raise ValueError(f"stored MIH table {prefix!r}: starts must increase")
        if rows.dtype != np.int32 or rows.shape != (n,) or (n and (int(rows.min()) < 0 or int(rows.max()) >= n)):
            raise ValueError(f"stored MIH table {prefix!r}: rows must be int32 ({n},) within 0..{n - 1}")
        return cls(length, occ, _ranks(occ), _buckets(starts), rows, *_table_words(words, rows, copy))


def _ranks(occupancy: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Non-empty buckets before each uint64 word of ``occupancy`` (exclusive prefix popcount)."""
    per_word = np.bitwise_count(occupancy.view(np.uint64)).astype(np.int64)
    out = np.zeros(per_word.size, dtype=np.int64)
    np.cumsum(per_word[:-1], out=out[1:])
    return out


def _buckets(starts: NDArray[np.integer]) -> NDArray[np.int64]:
    """``start << 32 | count`` per non-empty bucket from the starts ``(nonempty + 1,)`` (last: n)."""
    s = starts.astype(np.int64)
    out: NDArray[np.int64] = s[:-1] << 32
    out |= s[1:] - s[:-1]
    return out


def _table_words(words: NDArray[np.uint64], rows: NDArray[np.int32], copy: bool) -> tuple[NDArray[np.uint64], bool]:
    """The codes a table verifies against: a copy in bucket order, or the shared ``words``."""
    # take, not words[rows]: 1.2x at one word a code, 7-10x at two and four (fancy indexing of rows)
    return (words.take(rows, axis=0), False) if copy else (words, True)


def copies_words(words: NDArray[np.uint64], m: int) -> bool:
    """Whether ``m`` tables over ``words`` each keep a copy of the codes in bucket order."""
    return m <= COPY_MAX_TABLES and m * words.nbytes <= COPY_WORDS_MAX_BYTES


def build_tables(words: NDArray[np.uint64], subs: NDArray[np.int64], lengths: NDArray[np.int64], threads: int = 1,
                 ) -> list[MIHTable]:
    """One ``MIHTable`` per substring for codes given as ``words`` ``(n, W)`` uint64 (kept, as the
    shared codes, by reference) and their substring values ``subs`` ``(n, m)``; tables built on up
    to ``threads`` threads (their sorts and gathers release the GIL)."""
    n = words.shape[0]
    if n >= 2**31 - 1:
        raise ValueError(f"MIHIndex holds fewer than 2**31 codes, got {n}")
    copy = copies_words(words, lengths.size)

    def build(t: int) -> MIHTable:
        sub, length = subs[:, t], int(lengths[t])
        # a sort of unique keys (substring, row) is the stable argsort, several times faster
        keys = sub << 32
        keys |= np.arange(n, dtype=np.int64)
        keys.sort()
        rows = (keys & 0xFFFFFFFF).astype(np.int32)
        del keys
        counts = np.bincount(sub, minlength=1 << length)
        occupied = counts != 0
        starts = np.zeros(int(np.count_nonzero(occupied)) + 1, dtype=np.int64)
        np.cumsum(counts[occupied], out=starts[1:])
        occ = np.zeros(8 * -(-(1 << length) // 64), dtype=np.uint8)
        bits = np.packbits(occupied, bitorder="little")
        occ[: bits.size] = bits
        return MIHTable(length, occ, _ranks(occ), _buckets(starts), rows, *_table_words(words, rows, copy))

    if threads == 1 or lengths.size == 1:
        return [build(t) for t in range(lengths.size)]
    with ThreadPoolExecutor(max_workers=min(threads, lengths.size)) as pool:
        return list(pool.map(build, range(lengths.size)))
