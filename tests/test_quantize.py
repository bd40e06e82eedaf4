import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import annbin
from annbin.quantize import code_size_for


def test_worked_example_from_docstring():
    x = np.array([[0.3, -1, 2, 0, 0.1, -0.2, 5, 7, -3, 0.9]], dtype=np.float32)
    codes = annbin.binarize(x)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [[171, 64]]
    assert annbin.to_packing(codes, "hex") == ["ab40"]
    assert annbin.to_packing(codes, "binary").tolist() == [[43, -64]]
    assert annbin.unpack(codes, 10).tolist() == [[1, 0, 1, 0, 1, 0, 1, 1, 0, 1]]


def test_padding_stays_inside_each_row():
    # dim 12: a flattening packer would let row 1's bits spill into row 0's second byte.
    x = np.ones((3, 12), dtype=np.float32)
    x[1] = -1
    codes = annbin.binarize(x)
    assert codes.shape == (3, 2)
    assert codes.tolist() == [[255, 240], [0, 0], [255, 240]]


def test_matches_sentence_transformers_ubinary_convention(rng):
    x = rng.standard_normal((50, 64)).astype(np.float32)
    assert np.array_equal(annbin.binarize(x), np.packbits(x > 0, axis=1))
    assert np.array_equal(annbin.to_packing(annbin.binarize(x), "binary"), (np.packbits(x > 0, axis=1).astype(np.int16) - 128).astype(np.int8))


def test_per_dimension_thresholds(rng):
    x = rng.standard_normal((200, 16)).astype(np.float32) + np.arange(16, dtype=np.float32)
    t = annbin.fit_thresholds(x, "median")
    assert t.shape == (16,) and t.dtype == np.float32
    bits = annbin.unpack(annbin.binarize(x, t))
    # median thresholds balance every bit
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) <= 0.01)
    # default threshold 0 on data shifted positive: nearly all ones
    assert annbin.unpack(annbin.binarize(x)).mean() > 0.9
    assert np.allclose(annbin.fit_thresholds(x, "mean"), x.mean(axis=0), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=st.floats(-10, 10, width=32)))
def test_packings_round_trip(x):
    dim = x.shape[1]
    codes = annbin.binarize(x)
    assert codes.shape == (x.shape[0], code_size_for(dim))
    assert np.array_equal(annbin.unpack(codes, dim), (x > 0).astype(np.uint8))
    for packing in annbin.PACKINGS:
        if packing == "pm1":
            back = annbin.from_packing(annbin.to_packing(codes, "pm1", dim=dim), "pm1")
        else:
            back = annbin.from_packing(annbin.to_packing(codes, packing), packing)
        assert np.array_equal(back, codes), packing


def test_pm1_values(rng):
    codes = annbin.binarize(rng.standard_normal((5, 20)).astype(np.float32))
    pm = annbin.to_packing(codes, "pm1", dim=20)
    assert pm.dtype == np.float32 and pm.shape == (5, 20)
    assert set(np.unique(pm).tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("bad, exc, match", [
    (np.array([[1, 2]], dtype=np.int32), TypeError, "float"),
    (np.array([[np.nan, 1.0]]), ValueError, "NaN or inf"),
    (np.array([[np.inf, 1.0]]), ValueError, "NaN or inf"),
    (np.zeros((2, 2, 2)), ValueError, "2-D"),
])
def test_binarize_rejects_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        annbin.binarize(bad)


def test_binarize_1d_is_one_row():
    assert annbin.binarize(np.array([1.0, -1.0] * 4)).shape == (1, 1)


def test_bad_thresholds_and_packings():
    x = np.zeros((2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        annbin.binarize(x, np.zeros(7))
    with pytest.raises(ValueError, match="finite"):
        annbin.binarize(x, float("nan"))
    with pytest.raises(ValueError, match="median"):
        annbin.fit_thresholds(x, "mode")
    codes = annbin.binarize(x)
    with pytest.raises(ValueError, match="unknown packing"):
        annbin.to_packing(codes, "base64")
    with pytest.raises(TypeError, match="int8"):
        annbin.from_packing(codes, "binary")
    with pytest.raises(ValueError, match="same length"):
        annbin.from_packing(["ab", "abcd"], "hex")
    with pytest.raises(ValueError, match="invalid hex"):
        annbin.from_packing(["zz"], "hex")
    with pytest.raises(TypeError, match="uint8"):
        annbin.unpack(x)
    with pytest.raises(ValueError, match="does not fit"):
        annbin.unpack(codes, 9)
