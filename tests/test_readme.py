"""README's and docs/guide.md's Python examples run as written (the quickstarts and the faiss swaps)."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: the README's examples, then the guide's (docs/guide.md holds what the README points to)
BLOCKS = re.findall(r"```python\n(.*?)```", README + (ROOT / "docs" / "guide.md").read_text(), flags=re.S)


def test_float_quickstart_runs_twice_with_its_figures(tmp_path, monkeypatch):
    """The first example: the no-argument index on the shipped set, run twice in one process (a
    notebook cell run again), each time with the recall the README's table gives."""
    monkeypatch.chdir(tmp_path)
    runs = []
    for _ in range(2):
        scope: dict = {}
        exec(BLOCKS[0], scope)
        _, truth = scope["ds"].get_groundtruth(10)
        index, ids = scope["index"], scope["ids"]
        assert scope["scores"].dtype == np.float32 and ids.shape == (1000, 10)
        assert index.spec.startswith(("rq-hnsw", "rabitq-hnsw")) and index.metric == "cos"
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
        assert recall >= 0.95, recall  # README: recall@10 >= 0.95 at the default settings
        assert index.disk_bytes() == 20_000 * 384 * 4 and index.memory_bytes() < 20_000 * 384  # floats on disk
        runs.append(ids)
    # the graph is built on every core, so insertion order (and a few ids) may differ between runs
    assert np.mean(runs[0] == runs[1]) > 0.95


def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(BLOCKS[1], scope)
    assert scope["D"].shape == (5, 10) and scope["D"].dtype == np.int32
    assert np.array_equal(scope["same"].search(scope["annbin"].binarize(scope["q"]), 10)[0], scope["D"])
    # 384-bit codes: MIH answers by the scan; with the scan off it runs its own lookups, same (D, I)
    codes_q = scope["annbin"].binarize(scope["q"])
    D, I = scope["same"].search(codes_q, 10, params={"fallback": "never"})
    assert_did_its_own_work(scope["same"])
    assert np.array_equal(D, scope["D"]) and np.array_equal(I, scope["I"])
    full = scope["emb"]
    scope["emb"] = full[:2000]  # the same code on fewer rows: ITQ and the graph build stay quick
    exec(BLOCKS[2], scope)  # three stages
    scope["emb"] = full
    fast, three = scope["fast"], scope["three"]
    assert scope["ids"].shape == (5, 10) and (np.diff(scope["scores"], axis=1) <= 0).all()
    assert fast.last_search_stats == {"candidates_per_query": 30.0, "vectors_read_per_query": 30.0}
    assert three.last_search_stats == {"candidates_per_query": 200.0, "vectors_read_per_query": 30.0}
    exact = np.argsort(-(scope["qu"] @ scope["unit"].T), axis=1)[:, :10]
    for ids in (scope["ids"], scope["ids3"]):  # q = emb[:5] + 0.1: each query's own row comes first
        assert (ids[:, 0] == exact[:, 0]).all()
    np.save("emb.npy", scope["emb"])
    scope["index"] = scope["same"]
    exec(BLOCKS[3], scope)  # rescoring
    assert scope["scores"].shape == (5, 10) and (np.diff(scope["scores"], axis=1) <= 0).all()


def test_faiss_swap_gives_the_same_distances(rng):
    d = 64
    codes = rng.integers(0, 256, (2000, d // 8), dtype=np.uint8)
    queries = codes[:20] ^ np.uint8(1)
    results = []
    for block in BLOCKS[4:6]:
        scope = {"np": np, "d": d, "codes": codes, "queries": queries}
        exec(block, scope)
        results.append(scope)
    faiss_run, annbin_run = results
    assert np.array_equal(faiss_run["D"], annbin_run["D"])
    assert np.array_equal(np.sort(faiss_run["Dr"]), np.sort(annbin_run["Dr"]))
    assert faiss_run["index"].ntotal == annbin_run["index"].ntotal == 1998
    mih = annbin_run["index"]  # 2,000 random codes: "auto" scans; "never" runs multi-index hashing
    D, I = mih.search(queries, 10, params={"fallback": "never"})
    assert_did_its_own_work(mih)
    assert np.array_equal(D, faiss_run["index"].search(queries, 10)[0])
    D2, I2 = mih.search(queries, 10)
    assert np.array_equal(D2, D) and np.array_equal(I2, I)  # one tie rule: the same ids either way


def test_faiss_float_swap_finds_what_faiss_finds():
    """README's float swap: annbin's results against the faiss index it replaces."""
    import faiss

    from annbin.bench.datasets import get_dataset

    ds = get_dataset("minilm_wordnet")
    emb, qs = ds.get_database()[:3000], ds.get_queries()[:100]
    ids = np.arange(3000, dtype=np.int64) * 7 + 5
    scope = {"np": np, "faiss": faiss, "annbin": __import__("annbin"), "dim": 384, "emb": emb, "ids": ids, "qs": qs}
    exec(BLOCKS[6], scope)
    _, want = scope["float_index"].search(qs, 10)
    found = scope["found"]
    assert np.isin(found, ids).all() and scope["scores"].dtype == np.float32
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), want.tolist())]) >= 0.9


def assert_did_its_own_work(index) -> None:
    """The last search of an MIH index made bucket lookups and sent no query to the flat scan."""
    stats = index.last_search_stats
    assert stats["lookups"] > 0 and stats["fallback_queries"] == 0, stats


def test_ci_runs_the_readme_commands():
    """README's second command (install with extras, lint, tests) is what .ci/run does, step for step."""
    bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    install, *steps = bash[1].strip().split(" && pip install ")[1].split(" && ")
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().splitlines()
    assert f"python -m pip install --quiet {install}" in ci
    assert [line for line in ci if line in steps] == steps  # each step, in the README's order
