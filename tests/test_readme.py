"""README's Python examples run as written (the quickstart and the faiss swap)."""

import re
from pathlib import Path

import numpy as np

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(BLOCKS[0], scope)
    assert scope["D"].shape == (5, 10) and scope["D"].dtype == np.int32
    assert np.array_equal(scope["same"].search(scope["annbin"].binarize(scope["q"]), 10)[0], scope["D"])
    np.save("emb.npy", scope["emb"])
    scope["index"] = scope["same"]
    exec(BLOCKS[1], scope)  # rescoring
    assert scope["scores"].shape == (5, 10) and (np.diff(scope["scores"], axis=1) <= 0).all()


def test_faiss_swap_gives_the_same_distances(rng):
    d = 64
    codes = rng.integers(0, 256, (2000, d // 8), dtype=np.uint8)
    queries = codes[:20] ^ np.uint8(1)
    results = []
    for block in BLOCKS[2:4]:
        scope = {"np": np, "d": d, "codes": codes, "queries": queries}
        exec(block, scope)
        results.append(scope)
    faiss_run, annbin_run = results
    assert np.array_equal(faiss_run["D"], annbin_run["D"])
    assert np.array_equal(np.sort(faiss_run["Dr"]), np.sort(annbin_run["Dr"]))
    assert faiss_run["index"].ntotal == annbin_run["index"].ntotal == 1998
