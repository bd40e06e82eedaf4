"""Sharded indexes on a Ray cluster: ``ShardedIndex`` over codes, ``ShardedEmbeddingIndex`` over float
embeddings (both need the ``annbin[distributed]`` extra).

Importing this package does not import Ray; building a ``ShardedIndex`` does, and raises an
``ImportError`` naming the extra when Ray is missing. See ``docs/distributed.md``.

    import ray
    from annbin.distributed import ShardedIndex
    ray.init()                                    # or ray.init(address="auto") on a cluster
    index = ShardedIndex("mih", d=384, shards=4)  # any annbin spec, one Ray actor per shard
    index.add(codes, ids=ids)                     # each code goes to the shard owning its id
    D, I = index.search(queries, k=10)            # every shard searches the batch; top-k merged
    index.save("shared-dir/")                     # a file per shard + manifest.json
    index = ShardedIndex.load("shared-dir/")

    sharded = ShardedEmbeddingIndex(shards=4)    # BinaryEmbeddingIndex per shard: floats in, float scores merged
    sharded.add(embeddings)                       # float (n, dim), rows in turn over the shards
    scores, ids = sharded.search(queries, 10)

Spec strings (``annbin.make_index``): ``"sharded:shards=2:mih"``, ``"sharded:shards=4,num_cpus=8:flat"``,
``"sharded:mih:m=4"`` (4 shards by default).
"""

from annbin.distributed._group import ShardError, import_ray
from annbin.distributed._layout import PARTITION, shard_of
from annbin.distributed.embedding import ShardedEmbeddingIndex
from annbin.distributed.sharded import ShardedIndex
from annbin.spec import is_sharded_spec, parse_sharded_spec

__all__ = ["PARTITION", "ShardError", "ShardedEmbeddingIndex", "ShardedIndex", "import_ray", "is_sharded_spec", "parse_sharded_spec", "shard_of"]
