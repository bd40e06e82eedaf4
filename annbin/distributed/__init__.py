"""Sharded indexes on a Ray cluster: ``ShardedIndex`` (needs the ``annbin[distributed]`` extra).

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

Spec strings (``annbin.make_index``): ``"sharded:shards=2:mih"``, ``"sharded:shards=4,num_cpus=8:flat"``,
``"sharded:mih:m=4"`` (4 shards by default).
"""

from annbin.distributed._group import ShardError, import_ray
from annbin.distributed._layout import PARTITION, is_sharded_spec, parse_sharded_spec, shard_of
from annbin.distributed.sharded import ShardedIndex

__all__ = ["PARTITION", "ShardError", "ShardedIndex", "import_ray", "is_sharded_spec", "parse_sharded_spec", "shard_of"]
