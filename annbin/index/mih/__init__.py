"""Multi-index hashing (Norouzi, Punjani & Fleet): an exact Hamming index in Python + numpy."""

from annbin.index.mih.index import MIHIndex

__all__ = ["MIHIndex"]
