"""SimHash of texts (Charikar, STOC 2002): near-duplicate documents get codes a few bits apart.

``simhash(texts)`` gives packed codes ``(n, bits // 8)`` uint8, in ``np.packbits`` order like every
annbin code, so they feed ``annbin.near_duplicates``, any annbin index or a faiss binary index as is.

How a text becomes a code (every step fixed, so a code means the same on every run and platform)
------------------------------------------------------------------------------------------------
1. **Tokens**: ``re.findall(r"\\w+", text.lower())``, i.e. the text lowercased (``str.lower``) and
   split on every character that is not a Unicode word character (letters, digits, underscore):
   ``"Don't stop, Bob!"`` -> ``["don", "t", "stop", "bob"]``.
2. **Shingles**: every run of ``shingle`` consecutive tokens, joined by one space
   (``"don t stop"``, ``"t stop bob"``). A text with fewer than ``shingle`` tokens (but at least
   one) is one shingle of all its tokens. A text with no token (empty, or only punctuation and
   spaces) has no shingle: its code is all zero bits, so such texts are exact duplicates of each
   other.
3. **Shingle hash**: ``hashlib.blake2b(shingle.encode("utf-8"), digest_size=bits // 8,
   salt=seed.to_bytes(16, "little")).digest()``, read as ``bits`` bits in ``np.unpackbits``
   order (bit 0 = the most significant bit of the first byte). Unlike Python's ``hash()`` it does
   not change between processes (``PYTHONHASHSEED``) or platforms.
4. **Vote**: bit ``b`` of the SimHash is 1 when *more than half* of the text's shingles have bit
   ``b`` set (a tie gives 0). A shingle that occurs several times votes that many times.

Changing one word of a text changes at most ``shingle`` of its shingles, so on a long text only a
few votes move and few bits flip; unrelated texts differ in about half of the bits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from annbin._checks import InputTypeError, check_int

__all__ = ["SIMHASH_BITS", "simhash"]

#: the code lengths ``simhash`` makes, in bits
SIMHASH_BITS: tuple[int, ...] = (64, 128, 256)
_WORD = re.compile(r"\w+")
# Shingles voted per numpy step: bounds the (chunk, bits) uint8 matrix of unpacked bits to 16 MiB
# at 256 bits, whatever the corpus size.
_CHUNK_SHINGLES = 1 << 16


def _shingles(text: str, shingle: int) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) <= shingle:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + shingle]) for i in range(len(words) - shingle + 1)]


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputTypeError(f"texts must be a list of str, got {type(text).__name__} at position {i}")
    return out


def simhash(texts: Iterable[str], *, shingle: int = 3, bits: int = 64, seed: int = 0) -> NDArray[np.uint8]:
    """SimHash codes of ``texts``: ``(n, bits // 8)`` uint8, packed as ``np.packbits`` (MSB first).

    Parameters
    ----------
    texts
        A list (or any iterable but a single ``str``) of ``n`` strings; see the module docstring
        for the tokenizer, the shingles and the hash.
    shingle
        Tokens per shingle (>= 1). 3 suits sentences and paragraphs: one changed word moves at most
        3 shingles' votes.
    bits
        Code length in bits: 64, 128 or 256.
    seed
        Salt of the shingle hash (an int, 0 <= seed < 2**128): another seed gives independent codes.

    Raises ``TypeError`` when ``texts`` is not a list of str, ``ValueError`` for an unknown
    ``bits`` or a ``shingle`` below 1.
    """
    docs = _check_texts(texts)
    shingle = check_int(shingle, "shingle", minimum=1)
    bits = check_int(bits, "bits")
    if bits not in SIMHASH_BITS:
        raise ValueError(f"bits must be one of {SIMHASH_BITS}, got {bits}")
    seed = check_int(seed, "seed", minimum=0)
    if seed >= 1 << 128:
        raise ValueError(f"seed must be < 2**128 (a 16-byte salt), got {seed}")
    nbytes = bits // 8
    hasher = hashlib.blake2b(digest_size=nbytes, salt=seed.to_bytes(16, "little"))
    out = np.zeros((len(docs), nbytes), np.uint8)
    done = 0
    while done < len(docs):
        # One chunk of whole documents: about _CHUNK_SHINGLES shingles, at least one document.
        rows: list[int] = []
        digests: list[bytes] = []
        counts: list[int] = []
        total = 0
        while done < len(docs) and (not rows or total < _CHUNK_SHINGLES):
            parts = _shingles(docs[done], shingle)
            if parts:
                for part in parts:
                    h = hasher.copy()
                    h.update(part.encode("utf-8"))
                    digests.append(h.digest())
                rows.append(done)
                counts.append(len(parts))
                total += len(parts)
            done += 1
        if not rows:
            continue
        votes = np.unpackbits(np.frombuffer(b"".join(digests), np.uint8).reshape(total, nbytes), axis=1)
        starts = np.concatenate(([0], np.cumsum(counts[:-1], dtype=np.int64)))
        ones = np.add.reduceat(votes, starts, axis=0, dtype=np.int32)  # every segment is non-empty
        out[rows] = np.packbits(2 * ones > np.asarray(counts, np.int32)[:, None], axis=1)
    return out
