"""Index variants behind one interface (see ``annbin.index.base.BinaryIndex``)."""
