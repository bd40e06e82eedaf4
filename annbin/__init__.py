"""annbin: nearest-neighbour search over binary embeddings."""

from typing import TYPE_CHECKING, Any

from annbin._load import load
from annbin.embed.embedding_index import BinaryEmbeddingIndex
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.floats import FloatFlat, FloatHNSW, is_float_spec, make_float_index
from annbin.embed.rescore import RescoredIndex
from annbin.index.base import BinaryIndex, UnsupportedOperation
from annbin.index.faiss_wrap import FaissIndex, from_faiss
from annbin.index.flat import FlatIndex
from annbin.index.hnsw import HNSWIndex
from annbin.index.ivf import IVFIndex
from annbin.index.mih import MIHIndex
from annbin.index.mih.join import duplicate_groups, near_duplicates
from annbin.index.registry import load_index, make_index
from annbin.quantize import PACKINGS, binarize, fit_thresholds, from_packing, to_packing, unpack
from annbin.simhash import simhash

if TYPE_CHECKING:
    from annbin.embed.tune import TuneResult, tune

__version__ = "0.1.0"

_LAZY = {"tune": "annbin.embed.tune", "TuneResult": "annbin.embed.tune"}  # loaded on first use


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'annbin' has no attribute {name!r}")


__all__ = [
    "BinaryEmbeddingIndex",
    "BinaryIndex",
    "Encoded",
    "Encoder",
    "FaissIndex",
    "FlatIndex",
    "FloatFlat",
    "FloatHNSW",
    "HNSWIndex",
    "IVFIndex",
    "MIHIndex",
    "PACKINGS",
    "RescoredIndex",
    "TuneResult",
    "UnsupportedOperation",
    "binarize",
    "duplicate_groups",
    "fit_thresholds",
    "from_faiss",
    "from_packing",
    "is_float_spec",
    "load",
    "load_index",
    "make_float_index",
    "make_index",
    "near_duplicates",
    "simhash",
    "to_packing",
    "tune",
    "unpack",
    "__version__",
]
