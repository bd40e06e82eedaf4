"""annbin.load: any saved annbin object (or faiss binary file), read by what its header says it is."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import annbin
from annbin.embed.rqlib import rabitqlib_available

DIM, N = 64, 600


@pytest.fixture(scope="module")
def floats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def codes(floats):
    return annbin.binarize(floats)


@pytest.mark.parametrize("spec", ["flat", "mih", "hnsw:M=8", "ivf:nlist=4,nprobe=4", "BFlat"])
def test_binary_index_files(tmp_path, codes, spec):
    index = annbin.make_index(spec, d=DIM)
    index.add(codes)
    index.save(str(tmp_path / "i.annbin"))
    back = annbin.load(tmp_path / "i.annbin")
    assert type(back) is type(index) and back.spec == index.spec
    np.testing.assert_array_equal(back.search(codes[:5], 3)[0], index.search(codes[:5], 3)[0])


def test_faiss_file_is_wrapped(tmp_path, codes):
    raw = faiss.IndexBinaryFlat(DIM)
    raw.add(codes)
    faiss.write_index_binary(raw, str(tmp_path / "f.faiss"))
    back = annbin.load(tmp_path / "f.faiss")
    assert isinstance(back, annbin.FaissIndex) and back.ntotal == N


@pytest.mark.parametrize("spec", ["rabitq", "rabitq-hnsw:M=8", "rq-hnsw:M=8,nbits=2", "rq-ivf:nlist=8"])
def test_float_in_index_files(tmp_path, floats, spec):
    if spec.startswith("rq-") and not rabitqlib_available():
        pytest.skip("rabitqlib is not usable here")
    index = annbin.make_float_index(spec, DIM)
    index.add(floats)
    index.save(tmp_path / "r.annbin")
    back = annbin.load(tmp_path / "r.annbin")
    assert type(back) is type(index) and back.ntotal == N and back.get_search_params() == index.get_search_params()
    np.testing.assert_array_equal(back.search(floats[:5], 3)[1], index.search(floats[:5], 3)[1])
    # the binary-only loader says what the file is and where to load it, not "incomplete header"
    with pytest.raises(ValueError, match=r"float-in index .*annbin\.load"):
        annbin.load_index(tmp_path / "r.annbin")


def test_embedding_index_directory_and_its_record(tmp_path, floats):
    index = annbin.BinaryEmbeddingIndex("flat", store_vectors="ram")
    index.add(floats)
    index.save(tmp_path / "e")
    for path in (tmp_path / "e", tmp_path / "e" / "embedding.annbin"):
        back = annbin.load(path)
        assert isinstance(back, annbin.BinaryEmbeddingIndex) and back.ntotal == N
        np.testing.assert_array_equal(back.search(floats[:5], 3)[1], index.search(floats[:5], 3)[1])


def test_bad_paths_raise_value_error(tmp_path, codes):
    with pytest.raises(ValueError, match="does not exist"):
        annbin.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="directory"):
        annbin.load(tmp_path / "empty")
    index = annbin.make_index("flat", d=DIM)
    index.add(codes)
    index.save(str(tmp_path / "i.annbin"))
    raw = bytearray((tmp_path / "i.annbin").read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte in the payload
    (tmp_path / "bad.annbin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum|corrupt"):
        annbin.load(tmp_path / "bad.annbin")
    (tmp_path / "junk").write_bytes(b"neither annbin nor faiss")
    with pytest.raises(ValueError):
        annbin.load(tmp_path / "junk")
