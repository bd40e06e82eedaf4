"""rq-ivf's build options, A/B in one process: ``route`` (a scan of every centroid vs rabitqlib's
graph over them) x ``fast`` (rabitqlib's fast quantization of the extra bits), on the first N rows of
``m2v_mpnet_10m``: build seconds (2 threads, 250k rows an add), then recall@10 of the 20 best
candidates by the codes' estimate and queries/s (1 thread, 1,000 queries) at nprobe 16 / 32 / 64,
the four indexes timed in turn for 3 rounds.

    python benchmarks/rqivf_options.py --n 300000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from annbin.embed.floats import make_float_index  # noqa: E402

from _data import load_prefix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    x, q, truth = load_prefix("m2v_mpnet_10m", args.n)
    nlist = round(4 * args.n ** 0.5)
    built = {}
    for route in ("flat", "hnsw"):
        for fast in ("false", "true"):
            stage = make_float_index(f"rq-ivf:nlist={nlist},route={route},fast={fast}", x.shape[1], "ip")
            stage.num_threads = 2
            t = time.perf_counter()
            for lo in range(0, args.n, 250_000):
                stage.add(x[lo:lo + 250_000])
            built[(route, fast)] = stage
            print(f"route={route} fast={fast}: build {time.perf_counter() - t:.1f} s", flush=True)
    for rnd in range(args.rounds):
        for (route, fast), stage in built.items():
            for nprobe in (16, 32, 64):
                t = time.perf_counter()
                ids = stage.search(q, 20, params={"nprobe": nprobe})[1]
                qps = len(q) / (time.perf_counter() - t)
                hit = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
                print(f"round {rnd} route={route} fast={fast} nprobe={nprobe}: recall@10 of 20 candidates {hit:.3f}, {qps:,.0f} q/s",
                      flush=True)


if __name__ == "__main__":
    main()
