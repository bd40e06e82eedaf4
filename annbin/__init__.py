"""annbin: nearest-neighbour search over binary embeddings."""

from annbin.embed.embedding_index import BinaryEmbeddingIndex
from annbin.embed.encoder import Encoded, Encoder
from annbin.embed.floats import FloatFlat, FloatHNSW, is_float_spec, make_float_index
from annbin.embed.rescore import RescoredIndex
from annbin.embed.tune import TuneResult, tune
from annbin.index.base import BinaryIndex, UnsupportedOperation
from annbin.index.faiss_wrap import FaissIndex, from_faiss
from annbin.index.flat import FlatIndex
from annbin.index.hnsw import HNSWIndex
from annbin.index.ivf import IVFIndex
from annbin.index.mih.index import MIHIndex
from annbin.index.registry import load_index, make_index
from annbin.quantize import PACKINGS, binarize, fit_thresholds, from_packing, to_packing, unpack

__version__ = "0.1.0"

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
    "fit_thresholds",
    "from_faiss",
    "from_packing",
    "is_float_spec",
    "load_index",
    "make_float_index",
    "make_index",
    "to_packing",
    "tune",
    "unpack",
    "__version__",
]
