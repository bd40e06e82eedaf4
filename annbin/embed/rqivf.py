"""``"rq-ivf"``: rabitqlib's IVF over RaBitQ codes, the first stage whose build keeps up at 10M.

A graph costs one beam search per inserted vector; an inverted file costs one nearest-centroid
lookup, so it builds tens of times faster (benchmarks/RESULTS.md, ``scale``). Float vectors in,
float queries in, estimated scores out (``annbin.embed.rqlib``'s conventions); ``rescorable``.

The first add fits ``nlist`` spherical k-means centroids on a seeded sample of at most
``TRAIN_POINTS`` rows a list and builds the lists; later adds are quantized against those
centroids, which do not move (add in big chunks: each add copies the lists it grows).
rabitqlib's ``IvfIndex`` draws its random rotation without a seed, so two builds of the same data
rank alike but not identically (a saved index reloads exactly).
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from annbin._checks import InputTypeError, check_int, resolve_threads
from annbin._training import training_sample
from annbin.embed.float_base import FloatResult
from annbin.embed.rqlib import RQBase, nearest_centroid, remove_lib_ids
from annbin.index.registry import register

__all__ = ["MAX_NLIST", "RQIVF", "TRAIN_POINTS"]

#: k-means sample rows a list: the centroids only route vectors to lists, so fewer than faiss's
#: usual 39-256 a list suffice, and k-means time grows with sample x nlist
TRAIN_POINTS = 16
_BUILD_ROWS = 1 << 16  # rabitqlib builds from this many rows, then grows by adds
#: the default nlist's ceiling: every added vector and every query scans the centroids, so past
#: this the scan outgrows the lists' saving (benchmarks/RESULTS.md, ``scale``)
MAX_NLIST = 4096


@register
class RQIVF(RQBase):
    """Inverted lists of ``nbits``-bit RaBitQ codes (``rabitqlib.IvfIndex``), scanned with its estimates.

    Parameters
    ----------
    dim : int
        Float dimension of the vectors, >= 1 (below 64, zero-padded to rabitqlib's smallest).
    metric : {"ip", "l2"}
        ``"ip"`` (default) or ``"l2"``; scores are estimates.
    nlist : int or None
        Build parameter: inverted lists, >= 1 (default None: ``4 * sqrt(n)`` of the first add, at
        most ``MAX_NLIST``).
        Give it for a streamed build: the first add alone cannot tell how big the index will grow.
    nbits : int
        Build parameter: bits a dimension of the codes, 1..9 (default 2: at 500k x 768 faster than 4 bits
        at equal recall after the float rescore, with half the RAM).
    route : {"flat", "hnsw"}
        Build parameter: how a vector or query finds its nearest lists: a scan of every centroid
        (default: at 300k x 768, nlist=2191, 2x the queries/s and half the build time of the graph
        route, benchmarks/RESULTS.md) or rabitqlib's graph over the centroids.
    fast : bool
        Build parameter: rabitqlib's fast quantization, one precomputed scale for the extra bits
        instead of a search per vector (default True: 17% faster to build there, the same recall).
    seed : int
        Build parameter: seed of k-means, >= 0 (default 0; the sample is ``annbin``'s one training seed).
    nprobe : int
        Search parameter: lists scanned a query, >= 1 (default 32).
    """

    variant = "rq-ivf"
    build_params = ("nlist", "nbits", "route", "fast", "seed")
    search_params = ("nprobe",)
    _lib_class = "IvfIndex"

    def __init__(self, dim: int, *, metric: str = "ip", nlist: int | None = None, nbits: int = 2, route: str = "flat",
                 fast: bool = True, seed: int = 0, nprobe: int = 32) -> None:
        super().__init__(dim, metric=metric, nprobe=nprobe)
        self.nlist = None if nlist is None else check_int(nlist, "nlist", minimum=1)
        self.nbits = self._check_nbits(nbits)
        if route not in ("hnsw", "flat"):
            raise ValueError(f"route must be 'hnsw' or 'flat', got {route!r}")
        if not isinstance(fast, (bool, np.bool_)):
            raise InputTypeError(f"fast must be a bool, got {type(fast).__name__}")
        self.route, self.fast = route, bool(fast)
        self._centroids: NDArray[np.float32] | None = None  # kept to route adds (saved beside rabitqlib's file)
        self.seed = check_int(seed, "seed", minimum=0)

    def get_params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nbits": self.nbits, "route": self.route, "fast": self.fast, "seed": self.seed}

    def _grow(self, x: NDArray[np.float32]) -> None:
        """Add rows to their nearest lists: routed here by a blocked matrix product (BLAS) where
        the centroids are known, which is faster than rabitqlib's own routing of an add."""
        ids = None if self._centroids is None or self.route != "flat" else nearest_centroid(x, self._centroids)
        self._index.add(x, cluster_ids=ids, num_threads=resolve_threads(self.num_threads), fast_quantization=self.fast)

    def _build(self, x: NDArray[np.float32]) -> Any:
        import rabitqlib

        n = x.shape[0]
        nlist = self.nlist or max(1, min(MAX_NLIST, int(round(4 * math.sqrt(n)))))
        if n < nlist:
            raise ValueError(f"rq-ivf fits its centroids on its first add: it needs at least nlist={nlist} vectors, "
                             f"got {n}; add more at once or lower nlist")
        sample = np.ascontiguousarray(training_sample(x, nlist * TRAIN_POINTS))
        km = faiss.Kmeans(x.shape[1], nlist, niter=10, seed=self.seed, spherical=self.metric == "ip",
                          min_points_per_centroid=1)
        km.train(sample)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        first = x[:_BUILD_ROWS]  # rabitqlib builds from one block and grows by adds
        index = rabitqlib.IvfIndex(self._lib_dim, first.shape[0], nlist, self.nbits, metric=self._lib_metric(),
                                   initializer=self.route)
        index.build(first, centroids, nearest_centroid(first, centroids), num_threads=resolve_threads(self.num_threads),
                    fast_quantization=self.fast)
        self._index, self._centroids, self.nlist = index, centroids, nlist
        if n > first.shape[0]:
            self._grow(x[first.shape[0]:])
        return index

    def _search(self, q: NDArray[np.float32], k: int) -> FloatResult:
        nprobe = min(self._effective_params()["nprobe"], self.nlist or 1)
        ids, dist = self._index.search(self._pad(q), k, nprobe, num_threads=self.search_threads)
        I = np.asarray(ids).astype(np.int64)
        I[np.asarray(ids) == np.iinfo(np.uint32).max] = -1  # rabitqlib pads with UINT32_MAX
        return self._scores(q, np.asarray(dist)), I

    def remove_ids(self, ids: ArrayLike) -> int:
        """Mark ``ids`` deleted (they stay in their lists, skipped by searches); returns how many
        were newly removed. Unknown ids are ignored."""
        return remove_lib_ids(self, ids)

    def _extra_arrays(self) -> dict[str, NDArray[Any]]:
        return {} if self._centroids is None else {f"{self.payload}.centroids": self._centroids}

    def reset(self) -> None:
        super().reset()
        self._centroids = None

    def _adopt_payload(self, blob: NDArray[np.uint8], path: Any, sidecars: dict[str, NDArray[Any]] | None = None) -> None:
        sidecars = dict(sidecars or {})
        centroids = sidecars.pop(".centroids", None)
        super()._adopt_payload(blob, path, sidecars)
        if centroids is not None:
            if centroids.shape != (self.nlist, self._lib_dim) or centroids.dtype != np.float32:
                raise ValueError(f"stored centroids have shape {centroids.shape} {centroids.dtype}, expected ({self.nlist}, {self._lib_dim}) float32")
            self._centroids = centroids
        if int(self._index.num_clusters) != self.nlist or str(self._index.initializer) != self.route:
            raise ValueError(f"stored rabitqlib index has nlist={int(self._index.num_clusters)}, routing "
                             f"{str(self._index.initializer)!r}; header says {self.nlist}, {self.route!r}")
