"""The spec grammar (``annbin.spec``), the registry, and ``spec`` round trips through ``make_index``.

Round trip: for every registered variant and wrapper, ``make_index(index.spec, d=index.d)`` builds
an index whose ``spec`` and parameters equal the original's, before and after ``add`` (IVF and MIH
choose ``nlist`` / ``m`` on their first add). A ``RescoredIndex`` round-trips with its data given
again by keyword (no string holds float vectors); a sharded one is checked in test_distributed.py.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import annbin
from annbin import spec as grammar
from annbin.bench import peers  # noqa: F401  (registers the peer specs this file round-trips, as the harness does)
from annbin.embed.floats import make_float_index
from annbin.embed.rescore import RescoredIndex
from annbin.index import registry
from annbin.spec import variant_name

D = 64

# variant -> specs to round-trip; a newly registered variant fails test_every_variant_has_cases
CASES = {
    "flat": ["flat"],
    "hnsw": ["hnsw", "hnsw:M=8,ef_construction=20,ef_search=7"],
    "mih": ["mih", "mih:m=4,fallback=never", "mih:fallback=always,fallback_ratio=0.5,num_threads=1"],
    "ivf": ["ivf", "ivf:nlist=8,nprobe=3"],
    "faiss": ["faiss", "faiss:factory=BHNSW8", "BFlat", "BHNSW16:ef_search=20", "IDMap2,BIVF8:nprobe=3",
              "BIVF4_HNSW8", "BHash16:nflip=2", "IDMap2,BHash4x16", "IDMap,BFlat"],
}
FLOAT_CASES = {
    "float-flat": ["float-flat"],
    "float-hnsw": ["float-hnsw:M=8,ef_construction=20,seed=3,ef=9"],
    "rabitq": ["rabitq:qb=2"],
    "ivf-rabitq": ["ivf-rabitq:nlist=4,nprobe=2"],
    "rabitq-hnsw": ["rabitq-hnsw:M=8,build=codes,ef_search=9"],
    "rq-hnsw": ["rq-hnsw:M=8,nbits=3,clusters=4,ef_search=9"],
    "rq-symqg": ["rq-symqg:max_degree=64,ef_search=9"],
    "rq-ivf": ["rq-ivf:nlist=8,nbits=3,route=flat,fast=false,seed=2,nprobe=5"],
    "faiss-hnsw-sq8": ["faiss-hnsw-sq8:M=8,ef=9"],
    "usearch": ["usearch:M=8,ef=9"],
    "scann": ["scann:leaves_to_search=4"],
    "rabitqlib-hnsw": ["rabitqlib-hnsw:nbits=3,ef_search=9"],
    "rabitqlib-symqg": ["rabitqlib-symqg:ef_search=9"],
}
#: the module a float variant imports to be built (skipped where it is not installed)
NEEDS = {"rq-hnsw": "rabitqlib", "rq-symqg": "rabitqlib", "rq-ivf": "rabitqlib", "usearch": "usearch", "scann": "scann",
         "rabitqlib-hnsw": "rabitqlib", "rabitqlib-symqg": "rabitqlib"}


def _same(a, b):
    assert b.spec == a.spec
    assert b.get_params() == a.get_params() and b.get_search_params() == a.get_search_params()
    assert type(b) is type(a) and b.d == a.d


# --- grammar -------------------------------------------------------------------------------------
def test_values_and_params():
    assert [grammar.parse_value(v) for v in (" 32", "-1", "0.5", "1e-3", "True", "false", "auto")] == [32, -1, 0.5, 1e-3, True, False, "auto"]
    assert grammar.parse_spec(" HNSW : M=32 , ef_search=64 ") == ("hnsw", {"M": 32, "ef_search": 64})
    assert grammar.parse_spec("flat") == ("flat", {})
    for bad, match in [("hnsw:M", "expected key=value"), ("hnsw:=3", "expected key=value"), ("hnsw:M=", "expected key=value"),
                       ("hnsw:M=1,M=2", "given twice"), ("", "non-empty"), (3, "non-empty")]:
        with pytest.raises(ValueError, match=match):
            grammar.parse_spec(bad)
    assert grammar.variant_name(" MIH:m=4") == "mih" and grammar.variant_name(None) == ""


def test_format_spec_is_what_parse_spec_reads():
    params = {"M": 8, "ratio": 0.5, "on": True, "mode": "never", "skip": None}
    text = grammar.format_spec("hnsw", params)
    assert text == "hnsw:M=8,ratio=0.5,on=True,mode=never"  # None: the default, left out
    assert grammar.parse_spec(text) == ("hnsw", {k: v for k, v in params.items() if v is not None})
    assert grammar.format_spec("flat", {}) == "flat"
    for bad in ("a,b", "a:b", "a=b", "a|b", "a+b", "a b", ""):
        with pytest.raises(ValueError, match="spec value"):
            grammar.format_spec("x", {"k": bad})


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                       st.one_of(st.integers(-10**9, 10**9), st.booleans(),
                                 st.floats(allow_nan=False, allow_infinity=False),
                                 st.from_regex(r"[A-Za-z_][A-Za-z_.\-]{0,8}", fullmatch=True).filter(lambda s: s.lower() not in ("true", "false"))),
                       max_size=5))
def test_format_then_parse_round_trips(params):
    assert grammar.parse_spec(grammar.format_spec("v", params)) == ("v", params)


def test_faiss_factory_form():
    assert grammar.is_faiss_factory("BHNSW32") and grammar.is_faiss_factory("IDMap2, BFlat")
    assert not grammar.is_faiss_factory("bflat") and not grammar.is_faiss_factory("flat") and not grammar.is_faiss_factory(None)
    assert grammar.split_factory("IDMap2,BIVF64:nprobe=8") == ("IDMap2,BIVF64", {"nprobe": 8})
    with pytest.raises(ValueError, match="not a faiss"):
        grammar.split_factory("hnsw:M=8")


def test_sharded_prefix_round_trips():
    for inner, options in [("mih:m=4", {"shards": 2}), ("flat", {}), ("hnsw:M=8", {"shards": 3, "num_cpus": 2})]:
        text = grammar.format_sharded_spec(inner, options)
        assert grammar.is_sharded_spec(text) and grammar.parse_sharded_spec(text) == (inner, options)


def test_wrapped_form():
    assert grammar.parse_wrapped_spec("hnsw:M=16,ef_search=8+rescore:oversample=4,rerank=asymmetric") == (
        "hnsw:M=16,ef_search=8", "rescore", {"oversample": 4, "rerank": "asymmetric"})
    assert grammar.parse_wrapped_spec("sharded:shards=2:flat+Rescore") == ("sharded:shards=2:flat", "rescore", {})
    assert grammar.parse_wrapped_spec("flat") is None and grammar.parse_wrapped_spec("hnsw:x=+5") is None
    assert grammar.format_wrapped_spec("flat", "rescore", {"oversample": 2}) == "flat+rescore:oversample=2"


def test_sweeps():
    names = {"hnsw": (("M",), ("ef_search",))}
    assert grammar.parse_sweep("M=16|32,ef_search=8") == {"M": [16, 32], "ef_search": [8]}
    got = grammar.expand_sweep("hnsw:M=16|32,ef_search=8|64", names.__getitem__)
    assert got == [("hnsw:M=16", [{"ef_search": 8}, {"ef_search": 64}]), ("hnsw:M=32", [{"ef_search": 8}, {"ef_search": 64}])]
    assert grammar.expand_sweep("sharded:shards=2:hnsw:M=8", names.__getitem__) == [("sharded:shards=2:hnsw:M=8", [{}])]
    assert grammar.expand_sweep("BIVF8:nprobe=1|2", names.__getitem__) == [("BIVF8", [{"nprobe": 1}, {"nprobe": 2}])]
    with pytest.raises(ValueError, match="unknown parameter 'x'"):
        grammar.expand_sweep("hnsw:x=1|2", names.__getitem__)
    with pytest.raises(ValueError, match="given twice"):
        grammar.parse_sweep("M=1,M=2")
    # the registry's sweep knows binary and float-in variants
    assert registry.expand_spec("float-hnsw:M=8,ef=4|8") == [("float-hnsw:M=8", [{"ef": 4}, {"ef": 8}])]
    with pytest.raises(ValueError, match="unknown index spec 'nope'"):
        registry.expand_spec("nope:a=1")


def test_describe_spec():
    assert grammar.describe_spec("hnsw:M=8") == {"index": "hnsw", "params": {"M": 8}}
    assert grammar.describe_spec("sharded:shards=2:mih:m=4") == {"index": "sharded-mih", "params": {"shards": 2, "m": 4}}
    assert grammar.describe_spec("IDMap2,BIVF8:nprobe=2") == {"index": "IDMap2,BIVF8", "params": {}}


# --- registry ------------------------------------------------------------------------------------
def test_every_variant_has_cases():
    assert set(registry.variants()) == set(CASES)
    assert set(registry.float_variants()) == set(FLOAT_CASES)


def test_register_refuses_clashes_and_bad_names():
    class Other(annbin.FlatIndex):
        variant = "flat"

    with pytest.raises(ValueError, match="variant 'flat' is taken"):
        registry.register(Other)

    class Bad(annbin.FlatIndex):
        variant = "my:flat"

    with pytest.raises(ValueError, match="lower case without"):
        registry.register(Bad)
    with pytest.raises(TypeError, match="BinaryIndex or FloatIndex"):
        registry.register(dict)
    assert registry.variants()["flat"] is annbin.FlatIndex


def test_unknown_names_suggest_the_close_one_and_list_binary_and_float_in_variants():
    binaries, floats = sorted(registry.variants()), sorted(registry.float_variants())
    for call in (lambda: annbin.make_index("rabitq_hnsw", d=D), lambda: annbin.make_index("rabitq_hnsw:M=8+rescore", d=D),
                 lambda: annbin.BinaryEmbeddingIndex("rabitq_hnsw"), lambda: registry.expand_spec("rabitq_hnsw:ef_search=8|16")):
        with pytest.raises(ValueError, match="did you mean 'rabitq-hnsw'") as err:
            call()
        message = str(err.value)
        assert message.startswith("unknown index spec 'rabitq_hnsw")
        binary, _, float_in = message.partition("float-in (vectors in): ")
        assert binary.split("binary (codes in): ")[1].rstrip("; ").split(", ") == binaries
        assert float_in.split(", ") == floats and {"rabitq-hnsw", "float-hnsw"} <= set(floats)
    with pytest.raises(ValueError, match=r"unknown index spec 'hsnw:M=8'; did you mean 'hnsw'\? known: binary"):
        annbin.make_index("hsnw:M=8", d=D)
    with pytest.raises(ValueError, match=r"unknown index spec 'nope'; known: binary .*; float-in \(vectors in\): .*rabitq"):
        annbin.make_index("nope", d=D)  # nothing close: no suggestion
    with pytest.raises(ValueError, match=r"unknown float index spec 'float_hnsw'; did you mean 'float-hnsw'\? known: binary .*float-in"):
        make_float_index("float_hnsw", 8)
    with pytest.raises(ValueError, match="'hnsw:M=8' is a binary index .*make_index"):
        make_float_index("hnsw:M=8", 8)
    with pytest.raises(ValueError, match=r"unknown wrapper 'rescor' .*did you mean 'rescore'\?"):
        annbin.make_index("flat+rescor:oversample=2", d=D)


def test_make_index_errors():
    with pytest.raises(ValueError, match="unknown index spec 'nope'"):
        annbin.make_index("nope", d=D)
    with pytest.raises(ValueError, match="float-in index.*make_float_index"):
        annbin.make_index("rabitq", d=D)
    with pytest.raises(ValueError, match="unknown wrapper 'boost'"):
        annbin.make_index("flat+boost:x=1", d=D)
    with pytest.raises(TypeError, match="data keyword"):
        annbin.make_index("flat", d=D, vectors=np.zeros((1, D), np.float32))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['nope'\] for '\+rescore'"):
        annbin.make_index("flat+rescore:nope=1", d=D)
    with pytest.raises(ValueError, match="without vectors"):
        annbin.make_index("flat+rescore:oversample=2", d=D)  # needs vectors= or a rerank
    registry.check_spec("hnsw:M=8+rescore:oversample=2")
    with pytest.raises(ValueError, match="unknown parameter"):
        registry.check_spec("sharded:shards=2:hnsw:nope=1")


# --- d= by keyword -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_constructors_take_d_by_keyword(name):
    cls = registry.variants()[name]
    param = inspect.signature(cls).parameters["d"]
    assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert cls(d=D).d == D and annbin.make_index(spec=name, d=D).d == D


# --- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [s for specs in CASES.values() for s in specs])
def test_binary_spec_round_trips(spec, rng):
    index = annbin.make_index(spec, d=D)
    _same(index, annbin.make_index(index.spec, d=index.d))
    if "BHash" not in spec:  # Hash indexes answer the same, but their spec has nothing new to show after add
        index.add(rng.integers(0, 256, (400, D // 8), dtype=np.uint8))
        again = annbin.make_index(index.spec, d=index.d)
        if isinstance(index, (annbin.IVFIndex, annbin.MIHIndex)):
            assert index.get_params() == again.get_params()  # nlist / m fixed by the first add
        _same(index, again)


@pytest.mark.parametrize("spec", [s for specs in FLOAT_CASES.values() for s in specs])
def test_float_spec_round_trips(spec):
    if variant_name(spec) in NEEDS:
        pytest.importorskip(NEEDS[variant_name(spec)])
    index = make_float_index(spec, 16, "ip")
    again = make_float_index(index.spec, 16, "ip")
    assert type(again) is type(index) and again.spec == index.spec


@pytest.mark.parametrize(
    "kwargs",
    [
        {"oversample": 3, "rerank": "asymmetric", "rerank_oversample": 2, "qb": 2},  # codes only
        {"oversample": 5, "vectors": True},
        {"oversample": 2, "vectors": True, "metric": "l2"},
    ],
)
@pytest.mark.parametrize("inner", ["flat", "hnsw:M=8,ef_search=12", "BIVF4:nprobe=2"])
def test_rescored_spec_round_trips(inner, kwargs, rng):
    vectors = rng.standard_normal((50, D)).astype(np.float32)
    kwargs = dict(kwargs)
    data = {"vectors": vectors} if kwargs.pop("vectors", False) else {}
    index = RescoredIndex(annbin.make_index(inner, d=D), **kwargs, **data)
    assert index.spec.startswith(annbin.make_index(inner, d=D).spec + "+rescore:")
    again = annbin.make_index(index.spec, d=index.d, **data)
    assert isinstance(again, RescoredIndex) and again.spec == index.spec
    assert again.get_search_params() == index.get_search_params() and again.metric == index.metric
    assert again.inner.get_params() == index.inner.get_params()
    if data and index.inner.exact:  # the same data gives the same answers
        codes = annbin.binarize(vectors)
        index.inner.add(codes)
        again.inner.add(codes)
        q = vectors[:3] + 0.01
        assert all(np.array_equal(a, b) for a, b in zip(index.search(q, 5), again.search(q, 5)))
