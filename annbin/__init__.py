"""annbin: nearest-neighbour search over binary embeddings."""

from annbin.index.base import BinaryIndex, UnsupportedOperation
from annbin.index.flat import FlatIndex
from annbin.index.hnsw import HNSWIndex
from annbin.index.mih import MIHIndex
from annbin.index.registry import load_index, make_index
from annbin.quantize import PACKINGS, binarize, fit_thresholds, from_packing, to_packing, unpack

__version__ = "0.1.0"

__all__ = [
    "BinaryIndex",
    "FlatIndex",
    "HNSWIndex",
    "MIHIndex",
    "PACKINGS",
    "UnsupportedOperation",
    "binarize",
    "fit_thresholds",
    "from_packing",
    "load_index",
    "make_index",
    "to_packing",
    "unpack",
    "__version__",
]
