"""annbin.simhash: SimHash of word shingles, checked against a plain per-bit reference."""

import hashlib
import importlib
import re

import numpy as np
import pytest

from annbin import simhash

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "pu", "ri", "sa", "to", "vu", "ze") for b in ("bar", "cen", "dol", "fin", "gur", "hem", "jis", "mok")]


def words(rng, n):
    return [str(w) for w in rng.choice(VOCAB, n)]


def reference(text, shingle=3, bits=64, seed=0):
    """The module docstring, step by step in plain Python: the oracle for the numpy voting."""
    tokens = re.findall(r"\w+", text.lower())
    if not tokens:
        return np.zeros(bits // 8, np.uint8)
    if len(tokens) < shingle:
        shingles = [" ".join(tokens)]
    else:
        shingles = [" ".join(tokens[i:i + shingle]) for i in range(len(tokens) - shingle + 1)]
    votes = [0] * bits
    for s in shingles:
        digest = hashlib.blake2b(s.encode("utf-8"), digest_size=bits // 8, salt=seed.to_bytes(16, "little")).digest()
        for b in range(bits):
            votes[b] += (digest[b // 8] >> (7 - b % 8)) & 1
    return np.packbits(np.array([2 * v > len(shingles) for v in votes], np.uint8))


def hamming(a, b):
    return int(np.bitwise_count(a ^ b).sum())


@pytest.mark.parametrize("bits", [64, 128, 256])
@pytest.mark.parametrize("shingle", [1, 3, 5])
def test_matches_the_plain_reference(bits, shingle):
    rng = np.random.default_rng(bits + shingle)
    texts = [" ".join(words(rng, int(rng.integers(0, 40)))) for _ in range(30)]
    texts += ["", "!!! ...", "Solo", "Two words", "a b a b a b a b a b"]  # empty, punctuation, < shingle words, repeated shingles
    codes = simhash(texts, shingle=shingle, bits=bits)
    assert codes.dtype == np.uint8 and codes.shape == (len(texts), bits // 8)
    np.testing.assert_array_equal(codes, np.stack([reference(t, shingle, bits) for t in texts]))


def test_stable_codes():
    """A change of tokenizer, shingling or hash changes these; so does a change of bit order."""
    text = "The quick brown fox jumps over the lazy dog"
    assert simhash([text])[0].tobytes().hex() == "77b12fe87cf06675"
    assert simhash([text], bits=128)[0].tobytes().hex() == "73b2fde01df0c11e4cd014de6df04325"
    assert simhash([text], seed=1)[0].tobytes().hex() != "77b12fe87cf06675"


def test_identical_texts_identical_codes_and_tokenizer():
    codes = simhash(["Don't STOP, bob!", "don t stop bob", "don't stop bob", "dont stop bob"])
    assert (codes[0] == codes[1]).all() and (codes[0] == codes[2]).all()
    assert not (codes[0] == codes[3]).all()  # "dont" is one token, "don't" two


def test_short_and_empty_texts():
    # fewer words than a shingle: one shingle of all the words, so the code is that shingle's hash
    digest = hashlib.blake2b(b"two words", digest_size=8, salt=bytes(16)).digest()
    assert simhash(["Two  words"])[0].tobytes() == digest
    assert not simhash(["", "  ", "?!,."]).any()  # no token: all zero bits


def test_one_word_edit_is_near_unrelated_texts_are_far():
    rng = np.random.default_rng(7)
    text = words(rng, 200)
    edited = list(text)
    edited[100] = "zzzz"
    a, b = simhash([" ".join(text), " ".join(edited)])
    assert hamming(a, b) < 10
    # over many one-word edits of the same text: mostly a few bits
    edits = []
    for pos in rng.integers(0, 200, size=50):
        e = list(text)
        e[pos] = "zzzz"
        edits.append(" ".join(e))
    d = np.bitwise_count(simhash(edits) ^ a).sum(axis=1)
    assert d.mean() < 6 and d.max() < 12
    unrelated = simhash([" ".join(words(rng, 200)) for _ in range(40)])
    dist = [hamming(unrelated[i], unrelated[j]) for i in range(40) for j in range(i + 1, 40)]
    assert 28 < np.mean(dist) < 36 and 10 < min(dist) and max(dist) < 54


def test_chunks_do_not_change_codes(monkeypatch):
    rng = np.random.default_rng(3)
    texts = [" ".join(words(rng, int(rng.integers(0, 30)))) for _ in range(200)]
    whole = simhash(texts)
    # the module, not the function annbin.simhash that shadows its name
    monkeypatch.setattr(importlib.import_module("annbin.simhash"), "_CHUNK_SHINGLES", 7)
    np.testing.assert_array_equal(simhash(texts), whole)
    np.testing.assert_array_equal(simhash(iter(texts)), whole)  # any iterable of str
    np.testing.assert_array_equal(simhash(np.array(texts)), whole)  # numpy str_ is a str


def test_codes_feed_faiss_directly():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    codes = simhash([" ".join(words(rng, 20)) for _ in range(50)])
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    D, ids = index.search(codes[:5], 1)
    assert (D[:, 0] == 0).all()


@pytest.mark.parametrize("bad", ["one text", b"bytes", 5, None, ["ok", 3], [b"x"]])
def test_not_a_list_of_str_is_a_type_error(bad):
    with pytest.raises(TypeError, match="list of str"):
        simhash(bad)


def test_bad_options():
    with pytest.raises(ValueError, match="bits must be one of"):
        simhash(["x"], bits=32)
    with pytest.raises(ValueError, match="bits must be one of"):
        simhash(["x"], bits=192)
    with pytest.raises(ValueError, match="shingle must be >= 1"):
        simhash(["x"], shingle=0)
    with pytest.raises(TypeError, match="shingle must be an int"):
        simhash(["x"], shingle=2.5)
    with pytest.raises(ValueError, match="seed"):
        simhash(["x"], seed=-1)
