"""The harness: datasets, ground truth, bench and tune runs, rows, reports, peers and the CLI.

It depends on the library (``annbin.index``, ``annbin.embed``); the library never imports it.
"""
